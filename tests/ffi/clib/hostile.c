/* C functions that misbehave, for the confinement tests. Each returns what
   the system gave it (-errno on failure) so a test sees which layer said no. */
#include "hostile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int null_deref(void) { return *(volatile int *)0; }

int spin(void) {
    volatile unsigned long n = 0;
    for (;;) n++;
    return 0;
}

int sleep_long(void) { return (int)sleep(1000); }

int kill_parent(void) { return kill(getppid(), SIGKILL) == 0 ? 0 : -errno; }

int kill_everyone(void) { return kill(-1, SIGKILL) == 0 ? 0 : -errno; }

/* Up to 200 children that wait to be killed: the count started, or -errno
   if not even one could start. */
int fork_bomb(void) {
    int started = 0;
    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        if (pid < 0) return started ? started : -errno;
        started++;
    }
    return started;
}

int open_shadow(void) {
    int fd = open("/etc/shadow", O_RDONLY);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
}

int open_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
}

int make_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
}

int big_malloc(void) {
    size_t size = (size_t)1 << 30;
    char *p = malloc(size);
    if (p == NULL) return -ENOMEM;
    memset(p, 1, size);
    free(p);
    return 0;
}

int add(int a, int b) { return a + b; }
