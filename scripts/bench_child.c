/*
 * bench_child: the supervised program of scripts/bench's crash-restart peers
 * (runit's runsv, s6-supervise, supervisord). It reads CLOCK_REALTIME as the
 * very first thing it does, appends "<realtime ns> <pid>\n" to the file
 * "starts" in its working directory with one O_APPEND write(2), and then waits
 * for a signal. It takes no arguments (s6-supervise passes the service's name
 * as argv[1]), so that it can be a service directory's ./run itself, with no
 * shell in between; supervisord gives it the directory with `directory=`.
 * It dies with its parent (PR_SET_PDEATHSIG), so it can never outlive the
 * supervisor under test.
 * Build: gcc -O2 [-static] -o C bench_child.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent)
        return 1;
    char line[64];
    int n = snprintf(line, sizeof line, "%lld %d\n",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (int)getpid());
    int fd = open("starts", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n)
        return 4;
    close(fd);
    for (;;)
        pause();
}
