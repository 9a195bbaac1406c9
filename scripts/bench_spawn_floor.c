/*
 * bench_spawn_floor: the lower bound for the spawn-heavy scenarios, the same
 * load started the best way this machine allows, so that cronwarden's figure
 * is a ratio to the physical limit in the same run.
 *
 *   burst RECORDER OUTFILE N THREADS AT
 *       N recorders, all scheduled for the whole second AT (unix seconds):
 *       THREADS threads (one per core) each sleep to AT with clock_nanosleep
 *       (TIMER_ABSTIME), then posix_spawn their share (N/THREADS) back to back,
 *       then reap them.
 *   pattern RECORDER OUTFILE N THREADS FROM SECONDS
 *       the 10,000-job per-minute pattern: job i fires at second i % 60 of
 *       every minute; for each whole second from FROM for SECONDS seconds,
 *       the threads start that second's jobs as above.
 *
 * Each child gets CRONWARDEN_SCHEDULED_FOR (RFC 3339, UTC) and
 * CRONWARDEN_JOB; everything it needs is prepared before the sleep. The
 * recorder appends its own start time, so delays are read as for cronwarden.
 * At the end it prints "cpu: OWN JOBS" on stderr: the CPU ms of its own
 * threads and of the recorders it reaped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct share {
    const char *rec, *out;
    long first, count; /* job indices [first, first+count) of this thread */
    long n;            /* all jobs (pattern: which fire in which second) */
    long from, seconds;
    int pattern;
    pid_t *pids;
    int failed;
};

static void fire_second(struct share *s, long sec)
{
    char sched[64], job[64];
    struct tm tm;
    time_t t = (time_t)sec;
    gmtime_r(&t, &tm);
    strftime(sched, sizeof sched, "CRONWARDEN_SCHEDULED_FOR=%Y-%m-%dT%H:%M:%SZ", &tm);
    strcpy(job, "CRONWARDEN_JOB=floor");
    char *argv[] = {(char *)s->rec, (char *)s->out, NULL};
    char *envp[] = {sched, job, NULL};
    struct timespec at = {.tv_sec = t, .tv_nsec = 0};
    int r;
    while ((r = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL)) == EINTR)
        ;
    long started = 0;
    for (long i = s->first; i < s->first + s->count; i++) {
        if (s->pattern && i % 60 != sec % 60)
            continue;
        pid_t pid;
        if (posix_spawn(&pid, s->rec, NULL, NULL, argv, envp) != 0) {
            s->failed++;
            continue;
        }
        s->pids[started++] = pid;
    }
    for (long k = 0; k < started; k++) {
        int status;
        while (waitpid(s->pids[k], &status, 0) < 0 && errno == EINTR)
            ;
    }
}

static void *run(void *arg)
{
    struct share *s = arg;
    for (long sec = s->from; sec < s->from + s->seconds; sec++)
        fire_second(s, sec);
    return NULL;
}

int main(int argc, char **argv)
{
    int pattern = argc == 8 && strcmp(argv[1], "pattern") == 0;
    if (!pattern && !(argc == 7 && strcmp(argv[1], "burst") == 0)) {
        fprintf(stderr,
                "usage: %s burst RECORDER OUTFILE N THREADS AT\n"
                "       %s pattern RECORDER OUTFILE N THREADS FROM SECONDS\n",
                argv[0], argv[0]);
        return 2;
    }
    long n = atol(argv[4]), threads = atol(argv[5]), from = atol(argv[6]);
    long seconds = pattern ? atol(argv[7]) : 1;
    if (n < 1 || threads < 1 || threads > 256 || seconds < 1) {
        fprintf(stderr, "%s: N, THREADS and SECONDS must be positive\n", argv[0]);
        return 2;
    }
    struct share sh[256];
    pthread_t tid[256];
    long per = (n + threads - 1) / threads;
    for (long t = 0; t < threads; t++) {
        long first = t * per;
        long count = first >= n ? 0 : (first + per > n ? n - first : per);
        sh[t] = (struct share){argv[2], argv[3], first, count, n, from, seconds, pattern,
                               calloc((size_t)(count ? count : 1), sizeof(pid_t)), 0};
        if (!sh[t].pids || pthread_create(&tid[t], NULL, run, &sh[t]) != 0) {
            perror("thread");
            return 1;
        }
    }
    int failed = 0;
    for (long t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        failed += sh[t].failed;
    }
    if (failed)
        fprintf(stderr, "%d spawns failed\n", failed);
    /* What the starts cost: this program's threads, and the recorders it
     * reaped (scripts/bench sets them beside cronwarden's). */
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
#define MS(ru) ((ru).ru_utime.tv_sec * 1e3 + (ru).ru_utime.tv_usec / 1e3 + \
                (ru).ru_stime.tv_sec * 1e3 + (ru).ru_stime.tv_usec / 1e3)
    fprintf(stderr, "cpu: %.1f %.1f\n", MS(self), MS(kids));
    return failed ? 1 : 0;
}
