/* A tracer of its own uid (issue "Harden it", item 8). Usage:
 *   tracer exec PROG ARGS...   the child asks to be traced (PTRACE_TRACEME) and execs PROG; the
 *                              tracer detaches at the exec stop and lets it run;
 *   tracer seize PROG ARGS...  the child execs PROG untraced; 300 ms later the tracer seizes it,
 *                              stops it (PTRACE_INTERRUPT), detaches and lets it run.
 * Either way PROG then runs untraced, after having stopped for a tracer (when a tracer could
 * have rewritten its memory). Exits with PROG's exit status; stdout is PROG's. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(100);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tracer exec|seize PROG ARGS...\n");
        return 100;
    }
    int seize = strcmp(argv[1], "seize") == 0;
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        if (!seize && ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) die("PTRACE_TRACEME");
        execv(argv[2], argv + 2);
        die("execv");
    }
    int st;
    if (seize) {
        usleep(300 * 1000);
        if (ptrace(PTRACE_SEIZE, child, NULL, NULL) != 0) die("PTRACE_SEIZE");
        if (ptrace(PTRACE_INTERRUPT, child, NULL, NULL) != 0) die("PTRACE_INTERRUPT");
    }
    if (waitpid(child, &st, __WALL) != child || !WIFSTOPPED(st)) die("waitpid (stop)");
    if (ptrace(PTRACE_DETACH, child, NULL, NULL) != 0) die("PTRACE_DETACH");
    if (waitpid(child, &st, __WALL) != child) die("waitpid (exit)");
    fprintf(stderr, "tracer: %s child %d stopped, detached, exited %d\n", argv[1], child, WEXITSTATUS(st));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 101;
}
