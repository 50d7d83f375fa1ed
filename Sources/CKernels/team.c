#include "ckernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

// The caller and a fixed set of helper threads that share each parallel step of the model: a product
// split by rows, attention split by heads, an element-wise pass split by rows. A training step has a
// few hundred such steps and a decoding step about twenty, each of microseconds to milliseconds; a
// pool that puts its threads to sleep between them pays a futex wake-up and a context switch for each
// (measured: 5% of a `tiny` forward pass in the scheduler, and the caller waiting on late workers).
// So the helpers spin between steps (yielding the core after a while, in case there are more threads
// than cores), nap after a few milliseconds idle, and block on a condition variable after about a
// tenth of a second, from which the caller wakes them.
//
// The caller posts a step by bumping each needed helper's `posted`; a helper runs its part and stores
// the same count in `finished`, on which the caller spins.

// Pauses (~0.3 ms), then yields (~1–2 ms), then 20 µs naps (~0.1 s), then sleep.
enum { SPINS_BEFORE_YIELDING = 1 << 12, SPINS_BEFORE_NAPPING = (1 << 12) + (1 << 11), NAPS_BEFORE_SLEEPING = 2000 };

struct ck_helper {
    pthread_t thread;
    struct ck_team *team;
    int part;
    _Atomic unsigned long posted;
    _Atomic unsigned long finished;
    _Atomic int sleeping;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} __attribute__((aligned(64)));

struct ck_team {
    int helper_count;
    struct ck_helper *helpers;
    _Atomic int quit;
    _Atomic int busy;
    ck_team_task task;
    void *context;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Waits until `helper` is posted a step other than `seen` (returns its count) or the team quits (0).
static unsigned long wait_for_step(struct ck_helper *helper, unsigned long seen) {
    struct ck_team *team = helper->team;
    unsigned long spins = 0, naps = 0, posted;
    while ((posted = atomic_load_explicit(&helper->posted, memory_order_acquire)) == seen) {
        if (atomic_load_explicit(&team->quit, memory_order_relaxed)) return 0;
        if (++spins <= SPINS_BEFORE_YIELDING) {
            cpu_relax();
        } else if (spins <= SPINS_BEFORE_NAPPING) {
            sched_yield(); // with more threads than cores, let the thread that has work run
        } else if (++naps <= NAPS_BEFORE_SLEEPING) {
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
        } else {
            // Long idle (the caller reading data, writing a checkpoint, or done with parallel work):
            // sleep until posted. `sleeping` and `posted` are both sequentially consistent, so either
            // this thread sees the new count or the caller sees `sleeping` and signals.
            atomic_store(&helper->sleeping, 1);
            pthread_mutex_lock(&helper->lock);
            while (atomic_load(&helper->posted) == seen && !atomic_load(&team->quit))
                pthread_cond_wait(&helper->wake, &helper->lock);
            pthread_mutex_unlock(&helper->lock);
            atomic_store(&helper->sleeping, 0);
            spins = naps = 0;
        }
    }
    return posted;
}

static void *helper_main(void *argument) {
    struct ck_helper *helper = argument;
    unsigned long seen = 0;
    for (;;) {
        unsigned long posted = wait_for_step(helper, seen);
        if (posted == 0) return NULL;
        seen = posted;
        helper->team->task(helper->team->context, helper->part);
        atomic_store_explicit(&helper->finished, posted, memory_order_release);
    }
}

static void wake_helper(struct ck_helper *helper) {
    pthread_mutex_lock(&helper->lock);
    pthread_cond_signal(&helper->wake);
    pthread_mutex_unlock(&helper->lock);
}

ck_team *ck_team_create(int helpers) {
    if (helpers < 1) return NULL;
    struct ck_team *team = calloc(1, sizeof *team);
    if (!team) return NULL;
    team->helpers = aligned_alloc(64, sizeof(struct ck_helper) * (size_t)helpers);
    if (!team->helpers) {
        free(team);
        return NULL;
    }
    for (int i = 0; i < helpers; i++) {
        struct ck_helper *helper = &team->helpers[i];
        helper->team = team;
        helper->part = i + 1;
        atomic_init(&helper->posted, 0);
        atomic_init(&helper->finished, 0);
        atomic_init(&helper->sleeping, 0);
        pthread_mutex_init(&helper->lock, NULL);
        pthread_cond_init(&helper->wake, NULL);
        if (pthread_create(&helper->thread, NULL, helper_main, helper) != 0) {
            team->helper_count = i;
            ck_team_destroy(team);
            return NULL;
        }
        team->helper_count = i + 1;
    }
    return team;
}

void ck_team_destroy(ck_team *team) {
    if (!team) return;
    atomic_store(&team->quit, 1);
    for (int i = 0; i < team->helper_count; i++) wake_helper(&team->helpers[i]);
    for (int i = 0; i < team->helper_count; i++) {
        pthread_join(team->helpers[i].thread, NULL);
        pthread_mutex_destroy(&team->helpers[i].lock);
        pthread_cond_destroy(&team->helpers[i].wake);
    }
    free(team->helpers);
    free(team);
}

int ck_team_helpers(const ck_team *team) { return team->helper_count; }

int ck_team_run(ck_team *team, ck_team_task task, void *context, int parts) {
    if (parts < 1 || parts > team->helper_count + 1) return 0;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&team->busy, &idle, 1)) return 0;
    team->task = task;
    team->context = context;
    // Helper 0 takes part in every step with parts > 1, so its count is the largest any helper has
    // seen and one ticket above it is new to all; helpers beyond the parts are not posted.
    unsigned long ticket = atomic_load_explicit(&team->helpers[0].posted, memory_order_relaxed) + 1;
    for (int i = 0; i < parts - 1; i++) {
        struct ck_helper *helper = &team->helpers[i];
        atomic_store(&helper->posted, ticket);
        if (atomic_load(&helper->sleeping)) wake_helper(helper);
    }
    task(context, 0);
    for (int i = 0; i < parts - 1; i++) {
        // With more threads than cores a helper may be waiting for this core: yield after a while.
        unsigned long spins = 0;
        while (atomic_load_explicit(&team->helpers[i].finished, memory_order_acquire) != ticket) {
            if (++spins < SPINS_BEFORE_YIELDING) cpu_relax();
            else sched_yield();
        }
    }
    atomic_store_explicit(&team->busy, 0, memory_order_release);
    return 1;
}
