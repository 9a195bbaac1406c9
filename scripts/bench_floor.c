/*
 * bench_floor: the lower bound for "fire a process at each whole second".
 * For N iterations: sleep until the next whole second of CLOCK_REALTIME
 * (clock_nanosleep, TIMER_ABSTIME), then fork+exec the recorder with
 * CRONWARDEN_SCHEDULED_FOR set to that second (RFC 3339, UTC), then reap it.
 * Everything the child needs is prepared before the sleep. The time the
 * sleep returned (ns) is appended to OUTFILE.wake after each child is reaped,
 * to split the floor into timer wake-up and fork+exec.
 *
 * usage: bench_floor RECORDER OUTFILE N
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s RECORDER OUTFILE N\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[3]);
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
        struct timespec at = {.tv_sec = now.tv_sec + 1, .tv_nsec = 0};
        struct tm tm;
        gmtime_r(&at.tv_sec, &tm);
        strftime(sched, sizeof sched, "CRONWARDEN_SCHEDULED_FOR=%Y-%m-%dT%H:%M:%SZ", &tm);
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
        fprintf(wake_log, "%lld %lld\n", (long long)at.tv_sec * 1000000000LL,
                (long long)woke.tv_sec * 1000000000LL + woke.tv_nsec);
        fflush(wake_log);
    }
    fclose(wake_log);
    return 0;
}
