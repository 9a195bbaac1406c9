/*
 * bench_recorder: the job that scripts/bench runs. It reads CLOCK_REALTIME as
 * the very first thing it does and appends one line to the file named by
 * argv[1]:
 *
 *     <realtime ns> <SCHEDULED_FOR or -> <JOB or -> <TRIGGER or -> <COVERS or ->
 *
 * (the CRONWARDEN_* variables; COVERS with its spaces turned into commas)
 * with a single O_APPEND write(2), so that a thousand concurrent recorders
 * never interleave their lines. Build: gcc -O2 [-static] -o R bench_recorder.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2)
        return 2;
    const char *nominal = getenv("CRONWARDEN_SCHEDULED_FOR");
    const char *job = getenv("CRONWARDEN_JOB");
    const char *trigger = getenv("CRONWARDEN_TRIGGER");
    const char *covers = getenv("CRONWARDEN_COVERS");
    char cov[2048];
    snprintf(cov, sizeof cov, "%s", covers && *covers ? covers : "-");
    for (char *c = cov; *c; c++)
        if (*c == ' ')
            *c = ',';
    char line[4096];
    int n = snprintf(line, sizeof line, "%lld %s %s %s %s\n",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec,
                     nominal && *nominal ? nominal : "-",
                     job && *job ? job : "-",
                     trigger && *trigger ? trigger : "-", cov);
    if (n <= 0 || n >= (int)sizeof line)
        return 3;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return 4;
    if (write(fd, line, (size_t)n) != n)
        return 5;
    close(fd);
    return 0;
}
