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
// The caller posts a step by bumping each needed helper's `posted`. The parts are not assigned: the
// caller and the posted helpers claim them one at a time from the step's `claim` word, so a thread that
// runs slower (its core shared with another process) simply claims fewer, and a helper that has not
// started when the caller runs out of parts finds none left. The step is over when `done` counts every
// part; the caller spins on it. A part is computed the same whichever thread claims it, so results do
// not depend on the assignment.
//
// A core that another process keeps busy breaks this: the helper there runs only when the scheduler
// gives it a slice, so a step of microseconds waits milliseconds for it (measured: 2-thread decoding at
// a seventh of the 1-thread rate with a busy loop on the other core). So the caller times each step:
// after a few steps in which it waited on the helpers far longer than its own parts took, it runs every
// part itself for a while (20 ms, doubling up to a second while the helpers stay late), then tries the
// helpers again; and it does the same when, over 20 ms of steps, the helpers cost it more time than they
// saved (below: GAIN_WINDOW_NS). The parts are the same either way, each output computed whole by one
// thread, so the results do not change.
//
// While the caller runs alone its helpers sleep on their condition variable (napping, they took slices
// of the busy core or of the caller's). A stretch ends with a warm-up: the caller wakes them and goes on
// alone for WARM_UP_NS, time for a woken thread to be running again, and only the steps after that are
// judged, so that a helper is not found late merely by its own wake-up (tens of microseconds, longer
// than a decoding step's part).

// Pauses (~0.3 ms), then yields (~1–2 ms), then 20 µs naps (~0.1 s), then sleep.
enum { SPINS_BEFORE_YIELDING = 1 << 12, SPINS_BEFORE_NAPPING = (1 << 12) + (1 << 11), NAPS_BEFORE_SLEEPING = 2000 };

// Late helpers: a step is late when the caller waited more than its own parts took plus LATE_SLACK_NS
// (a helper waking from a nap costs tens of microseconds); LATE_STEPS_BEFORE_SOLO late steps in a row
// send the team solo for SOLO_FIRST_NS, and the same after a stretch alone doubles the next one. (One
// late step after a stretch is not enough: after a pause in the work the helpers nap, and the first step
// finds them late by their wake-up however idle their cores are.)
enum { LATE_STEPS_BEFORE_SOLO = 3 };
static const uint64_t LATE_SLACK_NS = 50000, SOLO_FIRST_NS = 20000000, SOLO_LONGEST_NS = 1000000000;
static const uint64_t WARM_UP_NS = 500000;

// Helpers that are neither late three steps in a row nor on time: a helper on a core that another
// process keeps busy runs in slices of milliseconds. In its slices it takes its parts; between them the
// caller takes every part and loses nothing; but a part it claimed just before the slice ended holds the
// caller until the next slice, a wait of milliseconds that can cost more than the slices gained (measured:
// `bench --preset tiny` with a busy loop on the other core, 2 threads 0.92-0.97x the rate of 1). So every
// GAIN_WINDOW_NS of shared steps the caller adds up what the helpers saved it (an estimate from its own
// parts' time, step by step) and goes alone, as for late steps, when the sum is negative. From any
// stretch alone (late steps or a window that cost) until a window pays for them, the helpers are `wary`:
// they sleep between steps instead of spinning, since a thread that spins on a shared core spends its share of it and is descheduled when
// its next part comes, while one that slept is run as soon as it is woken.
static const uint64_t GAIN_WINDOW_NS = 20000000;
// Only steps at least this long (their own parts, or a wait for a late helper) count: in shorter ones
// the estimate is biased against the helpers, since the weights a thread's rows read stay in its own
// core's cache (measured: decoding `tiny` judged this way went alone, 1.16x the time of with helpers).
static const uint64_t GAIN_SHORTEST_STEP_NS = 200000;
// A window is judged on at least this many such steps; one with fewer counts as paying (nothing against
// the helpers): one helper held up once (by the system, on an otherwise idle machine) is the late-step
// rule's to judge, and decoding, whose steps are all shorter, keeps its helpers.
enum { GAIN_FEWEST_STEPS = 4 };

// The team is contended when at least this many of the last 64 shared steps came late: then callers
// split their work finer (ck_team_contended), so that a slowed helper claims fewer parts. One late step
// is not enough: after any pause in the work the first step finds the helpers napping.
enum { CONTENDED_LATE_STEPS = 4 };

struct ck_helper {
    pthread_t thread;
    struct ck_team *team;
    _Atomic unsigned long posted;
    _Atomic int sleeping;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} __attribute__((aligned(64)));

struct ck_team {
    int helper_count;
    struct ck_helper *helpers;
    _Atomic int quit;
    _Atomic int busy;
    // Set while the caller runs alone: idle helpers sleep at once. `wake_count` rises with each
    // warm-up, which ends every helper's sleep.
    _Atomic int resting;
    _Atomic unsigned long wake_count;
    // Set whenever the caller goes alone, cleared when a window of shared steps pays for the helpers (as
    // `probing`): meanwhile idle helpers sleep at once instead of spinning.
    _Atomic int wary;
    ck_team_task task;
    void *context;
    // The step's generation (high 32 bits), its parts (16 bits) and the next part to claim (low 16 bits),
    // in one word so that a thread still looking at an earlier step can never claim a part of this one
    // under that step's count; and the parts finished so far.
    _Atomic uint64_t claim;
    _Atomic int done;
    // Helpers the step allows (ck_team_run_with): a late helper beyond them takes no part of it, so that
    // slots stay below this + 1. Written before the step's claim word is published.
    _Atomic int allowed_helpers;
    uint32_t generation;
    // Touched only by the caller that holds `busy`.
    int late_steps;         // consecutive steps in which the helpers came late
    int probing;            // since the last stretch alone no window paid for the helpers: the next one doubles
    uint64_t solo_until;    // until then (CLOCK_MONOTONIC ns), the caller runs every part itself
    uint64_t solo_span;     // the length of the last solo stretch
    uint64_t window_start;  // the first step the helpers shared since the last judgement (0: none yet)
    int64_t window_gain_ns; // the time they saved over those steps, negative when they cost time
    int window_steps;       // the steps counted in it
    unsigned long steps, solo_steps; // steps run, and of those run by the caller alone (ck_team_counts)
    // One bit per step the helpers took part in, the latest lowest: set when they came late.
    _Atomic uint64_t late_history;
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

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
        // Resting (the caller alone) or wary (helpers that lately cost time): no spinning, which on a
        // shared core would spend this thread's share of it before its next part.
        int resting = atomic_load_explicit(&team->resting, memory_order_relaxed);
        int spinning = !resting && !atomic_load_explicit(&team->wary, memory_order_relaxed);
        if (spinning && ++spins <= SPINS_BEFORE_YIELDING) {
            cpu_relax();
        } else if (spinning && spins <= SPINS_BEFORE_NAPPING) {
            sched_yield(); // with more threads than cores, let the thread that has work run
        } else if (spinning && ++naps <= NAPS_BEFORE_SLEEPING) {
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
        } else {
            // Long idle (the caller reading data, writing a checkpoint, or done with parallel work):
            // sleep until posted. `sleeping` and `posted` are both sequentially consistent, so either
            // this thread sees the new count or the caller sees `sleeping` and signals. A warm-up
            // (`wake_count`) ends the sleep too, after which the helper spins again.
            // A helper sent to sleep by `resting` also wakes when it is cleared.
            unsigned long wakes = atomic_load(&team->wake_count);
            atomic_store(&helper->sleeping, 1);
            pthread_mutex_lock(&helper->lock);
            while (atomic_load(&helper->posted) == seen && !atomic_load(&team->quit) && atomic_load(&team->wake_count) == wakes
                   && (!resting || atomic_load(&team->resting)))
                pthread_cond_wait(&helper->wake, &helper->lock);
            pthread_mutex_unlock(&helper->lock);
            atomic_store(&helper->sleeping, 0);
            spins = naps = 0;
        }
    }
    return posted;
}

// Claims the next part of the step whose generation is `generation`: its index, or -1 when none is
// left or another step has begun. task and context are read after a claim: the caller wrote them
// before publishing the claim word, and keeps them until every claimed part is done.
static int claim_part(struct ck_team *team, uint32_t generation) {
    uint64_t word = atomic_load_explicit(&team->claim, memory_order_acquire);
    for (;;) {
        uint32_t parts = (uint32_t)(word >> 16) & 0xFFFF, next = (uint32_t)word & 0xFFFF;
        if ((uint32_t)(word >> 32) != generation || next >= parts) return -1;
        if (atomic_compare_exchange_weak_explicit(&team->claim, &word, word + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (int)next;
    }
}

// Runs parts of the current step until none is left; returns how many this thread ran.
static int run_parts(struct ck_team *team, uint32_t generation) {
    int part, ran = 0;
    while ((part = claim_part(team, generation)) >= 0) {
        team->task(team->context, part);
        atomic_fetch_add_explicit(&team->done, 1, memory_order_release);
        ran++;
    }
    return ran;
}

// The calling thread's slot: set once by each helper to its index + 1; 0 on every other thread.
static _Thread_local int thread_slot = 0;

int ck_team_thread_slot(void) { return thread_slot; }

static void *helper_main(void *argument) {
    struct ck_helper *helper = argument;
    thread_slot = (int)(helper - helper->team->helpers) + 1;
    unsigned long seen = 0;
    for (;;) {
        unsigned long posted = wait_for_step(helper, seen);
        if (posted == 0) return NULL;
        seen = posted;
        // The step now running, which may be a later one than posted (this helper came late): its
        // parts are as good to take.
        uint32_t generation = (uint32_t)(atomic_load_explicit(&helper->team->claim, memory_order_acquire) >> 32);
        // The step's own limit, or a later step's (then this one has no part left to claim).
        if (thread_slot - 1 >= atomic_load_explicit(&helper->team->allowed_helpers, memory_order_relaxed)) continue;
        run_parts(helper->team, generation);
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
        atomic_init(&helper->posted, 0);
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

// Sends the caller alone from `now` for SOLO_FIRST_NS, or for twice the last stretch when the helpers
// have not been worth their steps since it (`probing`).
static void go_solo(struct ck_team *team, uint64_t now) {
    uint64_t doubled = team->solo_span * 2;
    team->solo_span = team->probing ? (doubled < SOLO_LONGEST_NS ? doubled : SOLO_LONGEST_NS) : SOLO_FIRST_NS;
    team->solo_until = now + team->solo_span;
    team->probing = 1;
    atomic_store_explicit(&team->wary, 1, memory_order_relaxed);
    team->late_steps = 0;
    team->window_start = 0;
    team->window_gain_ns = 0;
    team->window_steps = 0;
    atomic_store(&team->resting, 1);
}

int ck_team_run(ck_team *team, ck_team_task task, void *context, int parts) {
    return ck_team_run_with(team, task, context, parts, team->helper_count);
}

static int run_step(ck_team *team, ck_team_task task, void *context, int parts, int helpers);

int ck_team_run_with(ck_team *team, ck_team_task task, void *context, int parts, int helpers) {
    if (parts < 1 || parts > CK_TEAM_MAX_PARTS || helpers < 0) return 0;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&team->busy, &idle, 1)) return 0;
    // The caller's parts run on slot 0 of this team, even on a thread that is another team's helper.
    int own_slot = thread_slot;
    thread_slot = 0;
    int ran = run_step(team, task, context, parts, helpers);
    thread_slot = own_slot;
    return ran;
}

// ck_team_run_with once the caller holds `busy`; releases it.
static int run_step(ck_team *team, ck_team_task task, void *context, int parts, int helpers) {
    uint64_t start = now_ns();
    team->steps++;
    if (start >= team->solo_until && atomic_load_explicit(&team->resting, memory_order_relaxed)) {
        // The stretch is over: wake the helpers, and judge them only after the warm-up.
        atomic_store(&team->resting, 0);
        atomic_fetch_add(&team->wake_count, 1);
        for (int i = 0; i < team->helper_count; i++) wake_helper(&team->helpers[i]);
        team->solo_until = start + WARM_UP_NS;
    }
    if (start < team->solo_until) {
        team->solo_steps++;
        for (int part = 0; part < parts; part++) task(context, part);
        atomic_store_explicit(&team->busy, 0, memory_order_release);
        return 1;
    }
    team->task = task;
    team->context = context;
    atomic_store_explicit(&team->done, 0, memory_order_relaxed);
    int posted = parts - 1 < team->helper_count ? parts - 1 : team->helper_count;
    if (posted > helpers) posted = helpers;
    atomic_store_explicit(&team->allowed_helpers, posted, memory_order_relaxed);
    uint32_t generation = ++team->generation;
    atomic_store_explicit(&team->claim, (uint64_t)generation << 32 | (uint64_t)parts << 16, memory_order_release);
    // Helper 0 takes part in every step it is posted to, so its count is the largest any helper has
    // seen and one ticket above it is new to all; helpers beyond the parts (or the limit) are not posted.
    unsigned long ticket = atomic_load_explicit(&team->helpers[0].posted, memory_order_relaxed) + 1;
    for (int i = 0; i < posted; i++) {
        struct ck_helper *helper = &team->helpers[i];
        atomic_store(&helper->posted, ticket);
        if (atomic_load(&helper->sleeping)) wake_helper(helper);
    }
    int own_parts = run_parts(team, generation);
    uint64_t own_end = now_ns();
    // Parts the helpers claimed and still run. With more threads than cores a helper may be waiting
    // for this core: yield after a while.
    unsigned long spins = 0;
    while (atomic_load_explicit(&team->done, memory_order_acquire) != parts) {
        if (++spins < SPINS_BEFORE_YIELDING) cpu_relax();
        else sched_yield();
    }
    uint64_t end = now_ns();
    int late = end - own_end > (own_end - start) + LATE_SLACK_NS;
    uint64_t history = atomic_load_explicit(&team->late_history, memory_order_relaxed);
    atomic_store_explicit(&team->late_history, history << 1 | (uint64_t)late, memory_order_relaxed);
    // What the helpers saved this step: the caller's own parts took (own_end - start), so all of them
    // alone would have taken about that times parts / own_parts; the step took (end - start).
    if (team->window_start == 0) team->window_start = start;
    if (own_parts > 0 && end - start >= GAIN_SHORTEST_STEP_NS) {
        team->window_gain_ns += (int64_t)((own_end - start) * (uint64_t)parts / (uint64_t)own_parts) - (int64_t)(end - start);
        team->window_steps++;
    }
    if (late && ++team->late_steps >= LATE_STEPS_BEFORE_SOLO) {
        go_solo(team, end);
    } else if (!late) {
        team->late_steps = 0;
        if (end - team->window_start >= GAIN_WINDOW_NS) {
            if (team->window_gain_ns < 0 && team->window_steps >= GAIN_FEWEST_STEPS) go_solo(team, end);
            else {
                team->probing = 0;
                atomic_store_explicit(&team->wary, 0, memory_order_relaxed);
            }
            team->window_start = 0;
            team->window_gain_ns = 0;
            team->window_steps = 0;
        }
    }
    atomic_store_explicit(&team->busy, 0, memory_order_release);
    return 1;
}

int ck_team_contended(const ck_team *team) {
    return __builtin_popcountll(atomic_load_explicit(&team->late_history, memory_order_relaxed)) >= CONTENDED_LATE_STEPS;
}

void ck_team_counts(const ck_team *team, unsigned long *steps, unsigned long *solo_steps) {
    *steps = team->steps;
    *solo_steps = team->solo_steps;
}
