#define _POSIX_C_SOURCE 200809L
#include "gm_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int gm_fs_mkdirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

/* The lock file's owner text (what the holder wrote) into buf. */
static void read_owner(int fd, char *buf, size_t cap)
{
    if (!buf || cap < 2) return;
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

int gm_fs_lock(const char *path, const char *owner, char *held_by, size_t cap)
{
    if (held_by && cap) held_by[0] = '\0';
    int fd = open(path, O_RDWR | O_CREAT, 0666);
    if (fd < 0) return -1;
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &l) != 0) {
        const int e = errno;
        read_owner(fd, held_by, cap);
        close(fd);
        errno = e;
        return -1;
    }
    if (owner && ftruncate(fd, 0) == 0) {
        ssize_t w = pwrite(fd, owner, strlen(owner), 0);
        (void)w; /* the text only informs whoever finds the lock held; the lock holds all the same */
    }
    return fd;
}

int gm_fs_lock_held(const char *path, char *held_by, size_t cap)
{
    if (held_by && cap) held_by[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int held = fcntl(fd, F_GETLK, &l) == 0 && l.l_type != F_UNLCK;
    if (held) read_owner(fd, held_by, cap);
    close(fd);
    return held;
}
