/* Code injected into an allowed binary (issue "Harden it", item 8): loaded with LD_PRELOAD or
 * LD_AUDIT, its constructor connects to $INJECT_ADDR:$INJECT_PORT itself and from a forked child,
 * before the program's main runs, and appends one JSON line per attempt to $INJECT_OUT:
 * {"who": "self"|"child", "ok", "errno", "pid"}. Built as a shared library. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* LD_AUDIT keeps a library only if it says which audit interface it speaks. */
unsigned int la_version(unsigned int version) { return version; }

static void attempt(const char *who) {
    const char *addr = getenv("INJECT_ADDR"), *port = getenv("INJECT_PORT"), *path = getenv("INJECT_OUT");
    if (!addr || !port || !path) return;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    int err = ok ? 0 : errno;
    if (fd >= 0) close(fd);
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"who\": \"%s\", \"ok\": %s, \"errno\": %d, \"pid\": %d}\n", who,
                     ok ? "true" : "false", err, getpid());
    int out = open(path, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (out >= 0) {
        (void)!write(out, buf, n);
        close(out);
    }
}

__attribute__((constructor)) static void injected(void) {
    attempt("self");
    pid_t child = fork();
    if (child == 0) {
        attempt("child");
        _exit(0);
    }
    if (child > 0) waitpid(child, NULL, 0);
}
