/*
 * bench_floor: the lower bound for "fire a process at each whole second".
 * For N iterations: sleep until the next whole second of CLOCK_REALTIME
 * (clock_nanosleep, TIMER_ABSTIME), or OFFSET_MS after it, then fork+exec
 * the recorder with CRONWARDEN_SCHEDULED_FOR set to that instant (RFC 3339,
 * UTC, with milliseconds when OFFSET_MS is given), then reap it. The offset
 * lets it run beside cronwarden's per-second job in the same minutes
 * without their fires meeting.
 * Everything the child needs is prepared before the sleep. The time the
 * sleep returned (ns) is appended to OUTFILE.wake after each child is reaped,
 * to split the floor into timer wake-up and fork+exec.
 *
 * usage: bench_floor RECORDER OUTFILE N [OFFSET_MS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s RECORDER OUTFILE N [OFFSET_MS]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[3]);
    long offset_ms = argc == 5 ? atol(argv[4]) : 0;
    if (offset_ms < 0 || offset_ms > 999) {
        fprintf(stderr, "OFFSET_MS must be 0 to 999\n");
        return 2;
    }
    char wake_path[4096];
    snprintf(wake_path, sizeof wake_path, "%s.wake", argv[2]);
    FILE *wake_log = fopen(wake_path, "a");
    if (!wake_log) {
        perror(wake_path);
        return 1;
    }
    char *child_argv[] = {argv[1], argv[2], NULL};
    static char sched[64];
    char *child_env[] = {sched, "CRONWARDEN_JOB=floor", NULL};
    for (int i = 0; i < n; i++) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct timespec at = {.tv_sec = now.tv_sec + 1, .tv_nsec = offset_ms * 1000000L};
        if (offset_ms && now.tv_nsec < at.tv_nsec)
            at.tv_sec = now.tv_sec; /* this second's instant is still ahead */
        struct tm tm;
        gmtime_r(&at.tv_sec, &tm);
        size_t len = strftime(sched, sizeof sched, "CRONWARDEN_SCHEDULED_FOR=%Y-%m-%dT%H:%M:%S", &tm);
        if (offset_ms)
            snprintf(sched + len, sizeof sched - len, ".%03ldZ", offset_ms);
        else
            snprintf(sched + len, sizeof sched - len, "Z");
        int r;
        while ((r = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL)) == EINTR)
            ;
        if (r != 0) {
            fprintf(stderr, "clock_nanosleep: %d\n", r);
            return 1;
        }
        struct timespec woke;
        clock_gettime(CLOCK_REALTIME, &woke);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            execve(child_argv[0], child_argv, child_env);
            _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        fprintf(wake_log, "%lld %lld\n", (long long)at.tv_sec * 1000000000LL + at.tv_nsec,
                (long long)woke.tv_sec * 1000000000LL + woke.tv_nsec);
        fflush(wake_log);
    }
    fclose(wake_log);
    return 0;
}
