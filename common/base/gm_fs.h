/*
 * gm_fs: file-system helpers shared by the commands that write output folders.
 */
#ifndef GM_FS_H
#define GM_FS_H

#include <stddef.h>

/* mkdir -p: creates path and any missing parents (mode 0777 before umask). 0 on success, -1 with errno. */
int gm_fs_mkdirs(const char *path);

/*
 * An exclusive advisory lock on path (created if missing): a POSIX record lock,
 * so it ends with the process that holds it, SIGKILL included. On success the
 * file holds owner (may be NULL) and the open descriptor, which keeps the lock
 * until closed, is returned. -1 with errno otherwise; EAGAIN or EACCES: another
 * process holds it, and its owner text goes to held_by (cap bytes, may be NULL).
 */
int gm_fs_lock(const char *path, const char *owner, char *held_by, size_t cap);
/* 1 when another process holds gm_fs_lock on path now (its owner text into held_by), 0 when none does, -1 no file. */
int gm_fs_lock_held(const char *path, char *held_by, size_t cap);

#endif
