/*
 * gm_fs: file-system helpers shared by the commands that write output folders.
 */
#ifndef GM_FS_H
#define GM_FS_H

/* mkdir -p: creates path and any missing parents (mode 0777 before umask). 0 on success, -1 with errno. */
int gm_fs_mkdirs(const char *path);

#endif
