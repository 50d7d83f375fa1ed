#include "ckernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

// A caller and one helper thread that share each step of a decoding loop. The caller posts a task by
// bumping `posted`; the helper, spinning on it, runs its part and stores the same count in `finished`,
// on which the caller spins. No system call on the way: a decoding step is ~20 products of a few
// microseconds each, and a futex wake-up per product would cost about as much as the product.
struct ck_team {
    pthread_t thread;
    _Atomic unsigned long posted;
    _Atomic unsigned long finished;
    _Atomic int quit;
    ck_team_task task;
    void *context;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *helper_main(void *argument) {
    struct ck_team *team = argument;
    unsigned long seen = 0;
    for (;;) {
        unsigned long posted;
        unsigned long spins = 0;
        while ((posted = atomic_load_explicit(&team->posted, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&team->quit, memory_order_relaxed)) return NULL;
            // Between bursts (the caller sampling, printing, or gone for long) stop burning the core.
            if (++spins > (1u << 16)) {
                struct timespec pause = {0, 20000};
                nanosleep(&pause, NULL);
            } else {
                cpu_relax();
            }
        }
        seen = posted;
        team->task(team->context, 1);
        atomic_store_explicit(&team->finished, posted, memory_order_release);
    }
}

ck_team *ck_team_create(void) {
    struct ck_team *team = calloc(1, sizeof *team);
    if (!team) return NULL;
    if (pthread_create(&team->thread, NULL, helper_main, team) != 0) {
        free(team);
        return NULL;
    }
    return team;
}

void ck_team_destroy(ck_team *team) {
    if (!team) return;
    atomic_store_explicit(&team->quit, 1, memory_order_relaxed);
    pthread_join(team->thread, NULL);
    free(team);
}

void ck_team_run(ck_team *team, ck_team_task task, void *context) {
    team->task = task;
    team->context = context;
    unsigned long ticket = atomic_load_explicit(&team->posted, memory_order_relaxed) + 1;
    atomic_store_explicit(&team->posted, ticket, memory_order_release);
    task(context, 0);
    while (atomic_load_explicit(&team->finished, memory_order_acquire) != ticket) cpu_relax();
}
