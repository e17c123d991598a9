/* The pod sandbox's process for containerd on a node with no registry to pull
 * registry.k8s.io/pause from: hold the pod's namespaces, reap the zombies that end up
 * with PID 1, exit 0 on SIGTERM or SIGINT. Built static (gcc -static), so the image is
 * this one file on `scratch`. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void reap(int signal_number) {
    (void)signal_number;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signal_number, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART | (signal_number == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigemptyset(&action.sa_mask);
    return sigaction(signal_number, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("retune pause 1");
        return 0;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not PID 1, so orphaned processes are not mine to reap\n", stderr);
    }
    if (handle(SIGINT, stop) < 0 || handle(SIGTERM, stop) < 0 || handle(SIGCHLD, reap) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
