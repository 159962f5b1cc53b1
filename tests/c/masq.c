/* The executable masquerade of issue "Harden it": in a user namespace of its own, a process
 * unmaps its executable and points its mm's exe_file at another file with
 * prctl(PR_SET_MM, PR_SET_MM_MAP, {.exe_fd}); /proc/self/exe then names that file. Then it
 * connects to ADDR:PORT (or, with "fork", its child does) and prints one JSON line:
 * {"ok", "errno", "pid", "masqueraded"}.
 * Built as a shared library (this code must keep running once the executable is unmapped) and
 * called from main.c. Usage: masq TARGET ADDR PORT [fork|plain] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void out(int ok, int err, int masqueraded) {
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"ok\": %s, \"errno\": %d, \"pid\": %d, \"masqueraded\": %s}\n",
                     ok ? "true" : "false", err, getpid(), masqueraded ? "true" : "false");
    (void)!write(1, buf, n);
}

static int attempt(const char *addr, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return errno;
    int rc = connect(s, (struct sockaddr *)&sa, sizeof sa);
    int err = rc == 0 ? 0 : errno;
    close(s);
    return err;
}

/* Unmaps every mapping of the running executable (this code is in a library, not there). */
static int unmap_exe(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) return -1;
    exe[n] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    unsigned long ranges[64][2];
    int count = 0;
    char line[4608];
    while (fgets(line, sizeof line, f) && count < 64) {
        unsigned long lo, hi;
        char path[4096] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095[^\n]", &lo, &hi, path) >= 2 && strcmp(path, exe) == 0) {
            ranges[count][0] = lo;
            ranges[count][1] = hi;
            count++;
        }
    }
    fclose(f);
    for (int i = 0; i < count; i++) munmap((void *)ranges[i][0], ranges[i][1] - ranges[i][0]);
    return count;
}

static int masquerade(const char *target) {
    if (unshare(CLONE_NEWUSER) != 0) return errno;
    char stat[4096];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0) return EIO;
    stat[n] = 0;
    /* Fields after the command name, which ends with the last ')': field 3 is the state (a
     * letter), the rest are numbers. */
    char *p = strrchr(stat, ')');
    unsigned long long v[53] = {0};
    if (!p || !(p = strchr(p + 2, ' '))) return EIO;
    for (int i = 4; i <= 52 && *p; i++) {
        while (*p == ' ') p++;
        v[i] = strtoull(p, &p, 10);
    }
    int exe_fd = open(target, O_RDONLY);
    if (exe_fd < 0) return errno;
    static unsigned long auxv[128];
    int afd = open("/proc/self/auxv", O_RDONLY);
    ssize_t an = read(afd, auxv, sizeof auxv);
    close(afd);
    struct prctl_mm_map map = {
        .start_code = v[26], .end_code = v[27], .start_stack = v[28],
        .start_data = v[45], .end_data = v[46], .start_brk = v[47],
        .arg_start = v[48], .arg_end = v[49], .env_start = v[50], .env_end = v[51],
        .auxv = (__u64 *)auxv, .auxv_size = (unsigned int)an,
        .exe_fd = (unsigned int)exe_fd,
    };
    map.brk = (unsigned long long)(unsigned long)sbrk(0);
    if (unmap_exe() < 0) return EIO;
    if (prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&map, sizeof map, 0) != 0) return errno;
    return 0;
}

void masq_main(int argc, char **argv) {
    if (argc < 4) _exit(2);
    const char *mode = argc > 4 ? argv[4] : "";
    int masqueraded = 0;
    if (strcmp(mode, "plain") != 0) {
        int err = masquerade(argv[1]);
        if (err != 0) {
            char buf[128];
            int k = snprintf(buf, sizeof buf, "{\"setup_failed\": %d}\n", err);
            (void)!write(1, buf, k);
            _exit(3);
        }
        masqueraded = 1;
    }
    if (strcmp(mode, "fork") == 0) {
        pid_t c = fork();
        if (c == 0) {
            int err = attempt(argv[2], atoi(argv[3]));
            out(err == 0, err, masqueraded);
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        _exit(0);
    }
    int err = attempt(argv[2], atoi(argv[3]));
    out(err == 0, err, masqueraded);
    /* Alive a moment, so that the agent can read what its exe link claims. */
    sleep(1);
    _exit(0);
}
