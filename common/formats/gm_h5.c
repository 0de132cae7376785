#define _POSIX_C_SOURCE 200809L
#include "gm_h5.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* HDF5 prints its error stack by default; we report through gm_error instead. */
static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void tmp_name(char *buf, size_t cap, const char *path) { snprintf(buf, cap, "%s.tmp", path); }

const char *gm_h5_filename(hid_t obj, char *buf, size_t cap)
{
    if (cap == 0) return buf;
    buf[0] = '\0';
    if (H5Fget_name(obj, buf, cap) < 0) buf[0] = '\0';
    return buf;
}

/* Object creation properties shared by groups and datasets: no timestamps. */
static hid_t untimed(hid_t cls)
{
    hid_t p = H5Pcreate(cls);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}

static gm_status sync_path(const char *path, int dir, gm_error *err)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return gm_error_set(err, GM_EIO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && !dir) return gm_error_set(err, GM_EIO, "%s: fsync failed: %s", path, strerror(errno));
    return GM_OK;
}

/* Syncs the directory holding path, so renames in it are durable (best effort). */
static void sync_dir_of(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    sync_path(dir, 1, NULL);
}

/* A new file at "<path>.tmp": in memory (HDF5's core driver, nothing on disk until closed) or streamed to disk. */
static gm_status create(hid_t *file, const char *path, hsize_t ub, int in_memory, gm_error *err)
{
    quiet();
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
    herr_t rc = H5Pset_userblock(fcpl, ub);
    /* The oldest format that has what we use: files stay readable by older h5py. */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_EARLIEST, H5F_LIBVER_LATEST);
    if (in_memory) H5Pset_fapl_core(fapl, 1 << 20, 0);
    *file = rc >= 0 ? H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl) : H5I_INVALID_HID;
    H5Pclose(fapl);
    H5Pclose(fcpl);
    if (rc < 0) return gm_error_set(err, GM_EINVAL, "%s: a user block of %llu bytes is not a power of two >= 512", tmp,
                                    (unsigned long long)ub);
    if (*file < 0) return gm_error_set(err, GM_EIO, "%s: cannot create (directory missing or not writable?)", tmp);
    return GM_OK;
}

gm_status gm_h5_create_ub(hid_t *file, const char *path, hsize_t ub, gm_error *err)
{
    return create(file, path, ub, 1, err);
}

gm_status gm_h5_create_stream(hid_t *file, const char *path, gm_error *err)
{
    return create(file, path, 0, 0, err);
}

/* 1 when file lives in memory (gm_h5_create, gm_h5_create_ub). */
static int in_memory(hid_t file)
{
    hid_t fapl = H5Fget_access_plist(file);
    const int mem = fapl >= 0 && H5Pget_driver(fapl) == H5FD_CORE;
    if (fapl >= 0) H5Pclose(fapl);
    return mem;
}

/* Writes n bytes to path with every error checked (a full disk shows at write, flush, sync or close). */
static gm_status write_bytes(const char *path, const void *buf, size_t n, gm_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return gm_error_set(err, GM_EIO, "%s: cannot create: %s", path, strerror(errno));
    const char *p = buf;
    size_t done = 0;
    int e = 0;
    while (done < n && !e) {
        ssize_t k = write(fd, p + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) e = k < 0 ? errno : EIO;
        else done += (size_t)k;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e) return GM_OK;
    unlink(path);
    return gm_error_set(err, GM_EIO, "%s: writing %zu bytes failed: %s", path, n, strerror(e));
}

gm_status gm_h5_close_tmp(hid_t file, const char *path, gm_error *err)
{
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    if (!in_memory(file)) {
        if (H5Fclose(file) < 0) {
            unlink(tmp);
            return gm_error_set(err, GM_EIO, "%s: closing failed (disk full?)", tmp);
        }
        return GM_OK;
    }
    /*
     * The file is complete in memory: take its bytes and write them ourselves, so a
     * full or read-only disk fails in write(2) with its errno, never inside HDF5
     * (whose close of a file it could not flush leaves it open, and its own exit
     * handler then crashes on it).
     */
    hsize_t ub = 0;
    hid_t fcpl = H5Fget_create_plist(file);
    if (fcpl >= 0) {
        H5Pget_userblock(fcpl, &ub);
        H5Pclose(fcpl);
    }
    ssize_t n = H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0 ? H5Fget_file_image(file, NULL, 0) : -1;
    /* The image starts at the superblock: the user block (the caller fills it later) goes in front. */
    unsigned char *buf = n > 0 ? calloc((size_t)n + (size_t)ub, 1) : NULL;
    gm_status st = GM_OK;
    if (n <= 0) st = gm_error_set(err, GM_EIO, "%s: cannot take the file's image from HDF5", tmp);
    else if (!buf) st = gm_error_set(err, GM_ENOMEM, "%s: out of memory for a %zd-byte file", tmp, n);
    else if (H5Fget_file_image(file, buf + ub, (size_t)n) != n)
        st = gm_error_set(err, GM_EIO, "%s: cannot copy the file's image from HDF5", tmp);
    H5Fclose(file);
    if (st == GM_OK) st = write_bytes(tmp, buf, (size_t)n + (size_t)ub, err);
    free(buf);
    return st;
}

gm_status gm_h5_install(const char *path, int keep_prev, gm_error *err)
{
    char tmp[4096], prev[4096];
    tmp_name(tmp, sizeof tmp, path);
    snprintf(prev, sizeof prev, "%s.prev", path);
    gm_status st = sync_path(tmp, 0, err);
    if (st != GM_OK) {
        unlink(tmp);
        return st;
    }
    /* Only now that the new file is whole on disk does the old one step aside. */
    if (keep_prev && rename(path, prev) != 0 && errno != ENOENT) {
        int e = errno;
        unlink(tmp);
        return gm_error_set(err, GM_EIO, "%s: cannot rename to %s: %s", path, prev, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        if (!keep_prev) unlink(tmp); /* else tmp stays: it and prev are both whole */
        return gm_error_set(err, GM_EIO, "%s: cannot rename from %s: %s", path, tmp, strerror(e));
    }
    sync_dir_of(path);
    return GM_OK;
}

gm_status gm_h5_create(hid_t *file, const char *path, gm_error *err) { return gm_h5_create_ub(file, path, 0, err); }

gm_status gm_h5_commit(hid_t file, const char *path, gm_error *err)
{
    gm_status st = gm_h5_close_tmp(file, path, err);
    return st == GM_OK ? gm_h5_install(path, 0, err) : st;
}

void gm_h5_discard(hid_t file, const char *path)
{
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    if (file >= 0) H5Fclose(file);
    unlink(tmp);
}

gm_status gm_h5_open(hid_t *file, const char *path, int rw, gm_error *err)
{
    quiet();
    *file = -1;
    if (access(path, F_OK) != 0) return gm_error_set(err, GM_EIO, "%s: no such file", path);
    if (access(path, rw ? R_OK | W_OK : R_OK) != 0)
        return gm_error_set(err, GM_EIO, "%s: not %s", path, rw ? "writable" : "readable");
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) return gm_error_set(err, GM_EFORMAT, "%s: not an HDF5 file", path);
    *file = H5Fopen(path, rw ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0)
        return gm_error_set(err, GM_EFORMAT, "%s: HDF5 file is truncated or damaged and cannot be opened", path);
    return GM_OK;
}

void gm_h5_close_file(hid_t file)
{
    if (file >= 0) H5Fclose(file);
}

int gm_h5_exists(hid_t loc, const char *path)
{
    quiet();
    /* H5Lexists wants every intermediate link to exist: walk the path. */
    char buf[1024];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0) return 0;
            if (c == '\0') return 1;
            *p = c;
        }
    }
}

static gm_status missing(hid_t loc, const char *what, const char *name, gm_error *err)
{
    char f[1024];
    return gm_error_set(err, GM_EFORMAT, "%s: %s \"%s\" is missing", gm_h5_filename(loc, f, sizeof f), what, name);
}

gm_status gm_h5_group_create(hid_t loc, const char *name, hid_t *group, gm_error *err)
{
    quiet();
    hid_t gcpl = untimed(H5P_GROUP_CREATE);
    *group = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (*group < 0) {
        char f[1024];
        return gm_error_set(err, GM_EIO, "%s: cannot create group \"%s\"", gm_h5_filename(loc, f, sizeof f), name);
    }
    return GM_OK;
}

gm_status gm_h5_group_open(hid_t loc, const char *name, hid_t *group, gm_error *err)
{
    quiet();
    *group = gm_h5_exists(loc, name) ? H5Gopen2(loc, name, H5P_DEFAULT) : -1;
    return *group < 0 ? missing(loc, "group", name, err) : GM_OK;
}

/* ---- attributes ---------------------------------------------------------- */

static gm_status attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype, hsize_t n, const void *v,
                            gm_error *err)
{
    quiet();
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t space = n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a >= 0 && n > 0 ? H5Awrite(a, mtype, v) : (a >= 0 ? 0 : -1);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    if (rc < 0) {
        char f[1024];
        return gm_error_set(err, GM_EIO, "%s: cannot write attribute \"%s\"", gm_h5_filename(obj, f, sizeof f), name);
    }
    return GM_OK;
}

gm_status gm_h5_attr_write_ints(hid_t obj, const char *name, const long long *v, int n, gm_error *err)
{
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, (hsize_t)n, v, err);
}

gm_status gm_h5_attr_write_floats(hid_t obj, const char *name, const double *v, int n, gm_error *err)
{
    return attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)n, v, err);
}

gm_status gm_h5_attr_write_int(hid_t obj, const char *name, long long v, gm_error *err)
{
    return gm_h5_attr_write_ints(obj, name, &v, 1, err);
}

gm_status gm_h5_attr_write_float(hid_t obj, const char *name, double v, gm_error *err)
{
    return gm_h5_attr_write_floats(obj, name, &v, 1, err);
}

gm_status gm_h5_attr_write_str(hid_t obj, const char *name, const char *s, gm_error *err)
{
    quiet();
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    /* A fixed-length, null-terminated scalar string: h5py reads it as bytes/str. */
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a >= 0 ? H5Awrite(a, t, s) : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
    if (rc < 0) {
        char f[1024];
        return gm_error_set(err, GM_EIO, "%s: cannot write attribute \"%s\"", gm_h5_filename(obj, f, sizeof f), name);
    }
    return GM_OK;
}

long gm_h5_attr_count(hid_t obj, const char *name)
{
    quiet();
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t space = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    H5Aclose(a);
    return (long)n;
}

static gm_status attr_read(hid_t obj, const char *name, hid_t mtype, const char *kind, void *v, int n, gm_error *err)
{
    char f[1024];
    long have = gm_h5_attr_count(obj, name);
    if (have < 0) return missing(obj, "attribute", name, err);
    if (have != n)
        return gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" holds %ld values, expected %d",
                            gm_h5_filename(obj, f, sizeof f), name, have, n);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    int ok = (mtype == H5T_NATIVE_DOUBLE) ? (cls == H5T_FLOAT || cls == H5T_INTEGER) : cls == H5T_INTEGER;
    herr_t rc = ok && n > 0 ? H5Aread(a, mtype, v) : (ok ? 0 : -1);
    H5Aclose(a);
    if (rc < 0)
        return gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" is not %s", gm_h5_filename(obj, f, sizeof f),
                            name, kind);
    return GM_OK;
}

gm_status gm_h5_attr_read_ints(hid_t obj, const char *name, long long *v, int n, gm_error *err)
{
    return attr_read(obj, name, H5T_NATIVE_LLONG, "an integer", v, n, err);
}

gm_status gm_h5_attr_read_floats(hid_t obj, const char *name, double *v, int n, gm_error *err)
{
    return attr_read(obj, name, H5T_NATIVE_DOUBLE, "a number", v, n, err);
}

gm_status gm_h5_attr_read_int(hid_t obj, const char *name, long long *v, gm_error *err)
{
    return gm_h5_attr_read_ints(obj, name, v, 1, err);
}

gm_status gm_h5_attr_read_float(hid_t obj, const char *name, double *v, gm_error *err)
{
    return gm_h5_attr_read_floats(obj, name, v, 1, err);
}

gm_status gm_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t cap, gm_error *err)
{
    quiet();
    char f[1024];
    if (H5Aexists(obj, name) <= 0) return missing(obj, "attribute", name, err);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a);
    hid_t space = H5Aget_space(a);
    gm_status st = GM_OK;
    if (H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" is not a single string",
                          gm_h5_filename(obj, f, sizeof f), name);
    } else if (H5Tis_variable_str(ft) > 0) {
        /* Variable-length strings (what h5py writes for Python str). */
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 will not convert ASCII <-> UTF-8 */
        if (H5Aread(a, mt, &s) < 0 || !s)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" cannot be read",
                              gm_h5_filename(obj, f, sizeof f), name);
        else if (strlen(s) >= cap)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" is longer than %zu characters",
                              gm_h5_filename(obj, f, sizeof f), name, cap - 1);
        else
            memcpy(buf, s, strlen(s) + 1);
        if (s) H5free_memory(s);
        H5Tclose(mt);
    } else {
        size_t size = H5Tget_size(ft);
        char *tmp = calloc(1, size + 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, size + 1);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (!tmp)
            st = gm_error_set(err, GM_ENOMEM, "out of memory");
        else if (H5Aread(a, mt, tmp) < 0)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" cannot be read",
                              gm_h5_filename(obj, f, sizeof f), name);
        else if (strlen(tmp) >= cap)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" is longer than %zu characters",
                              gm_h5_filename(obj, f, sizeof f), name, cap - 1);
        else
            memcpy(buf, tmp, strlen(tmp) + 1);
        free(tmp);
        H5Tclose(mt);
    }
    H5Sclose(space);
    H5Tclose(ft);
    H5Aclose(a);
    return st;
}

/* A bound on a string attribute's size: a damaged type cannot ask for a huge allocation. */
enum { MAX_STR_ATTR = 1 << 24 };

gm_status gm_h5_attr_read_str_alloc(hid_t obj, const char *name, char **s, gm_error *err)
{
    quiet();
    char f[1024];
    *s = NULL;
    if (H5Aexists(obj, name) <= 0) return missing(obj, "attribute", name, err);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    hid_t space = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
    hid_t mt = H5Tcopy(H5T_C_S1);
    gm_status st = GM_OK;
    if (ft < 0 || space < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" is not a single string",
                          gm_h5_filename(obj, f, sizeof f), name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *v = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 will not convert ASCII <-> UTF-8 */
        if (H5Aread(a, mt, &v) < 0 || !v)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" cannot be read",
                              gm_h5_filename(obj, f, sizeof f), name);
        else if (!(*s = strdup(v)))
            st = gm_error_set(err, GM_ENOMEM, "out of memory");
        if (v) H5free_memory(v);
    } else {
        size_t size = H5Tget_size(ft);
        H5Tset_size(mt, size + 1);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (size == 0 || size > MAX_STR_ATTR)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" claims a string of %zu bytes (damaged?)",
                              gm_h5_filename(obj, f, sizeof f), name, size);
        else if (!(*s = calloc(1, size + 1)))
            st = gm_error_set(err, GM_ENOMEM, "out of memory");
        else if (H5Aread(a, mt, *s) < 0)
            st = gm_error_set(err, GM_EFORMAT, "%s: attribute \"%s\" cannot be read",
                              gm_h5_filename(obj, f, sizeof f), name);
    }
    if (st != GM_OK) {
        free(*s);
        *s = NULL;
    }
    H5Tclose(mt);
    if (space >= 0) H5Sclose(space);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return st;
}

/* ---- datasets ------------------------------------------------------------ */

/* The little-endian file type for a native memory type. */
static hid_t file_type(hid_t mtype)
{
    if (H5Tequal(mtype, H5T_NATIVE_FLOAT) > 0) return H5T_IEEE_F32LE;
    if (H5Tequal(mtype, H5T_NATIVE_DOUBLE) > 0) return H5T_IEEE_F64LE;
    if (H5Tequal(mtype, H5T_NATIVE_UINT8) > 0) return H5T_STD_U8LE;
    if (H5Tequal(mtype, H5T_NATIVE_INT32) > 0) return H5T_STD_I32LE;
    if (H5Tequal(mtype, H5T_NATIVE_LLONG) > 0) return H5T_STD_I64LE;
    if (H5Tequal(mtype, H5T_NATIVE_UINT64) > 0) return H5T_STD_U64LE;
    return mtype;
}

gm_status gm_h5_create_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                               hid_t *dset, gm_error *err)
{
    quiet();
    char f[1024];
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = untimed(H5P_DATASET_CREATE);
    /* Allocate at creation so a partly written file has a predictable layout. */
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC);
    *dset = H5Dcreate2(loc, name, file_type(type), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (*dset < 0)
        return gm_error_set(err, GM_EIO, "%s: cannot create dataset \"%s\" (exists already, or disk full?)",
                            gm_h5_filename(loc, f, sizeof f), name);
    return GM_OK;
}

gm_status gm_h5_write(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, gm_error *err)
{
    hid_t d;
    gm_status st = gm_h5_create_dataset(loc, name, type, rank, dims, &d, err);
    if (st != GM_OK) return st;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    herr_t rc = total ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    H5Dclose(d);
    if (rc < 0) {
        char f[1024];
        return gm_error_set(err, GM_EIO, "%s: cannot write dataset \"%s\"", gm_h5_filename(loc, f, sizeof f), name);
    }
    return GM_OK;
}

gm_status gm_h5_write_rows(hid_t dset, hid_t type, hsize_t first, hsize_t count, const void *data,
                           gm_error *err)
{
    quiet();
    char f[1024];
    if (count == 0) return GM_OK;
    hid_t fs = H5Dget_space(dset);
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[GM_H5_MAX_RANK], start[GM_H5_MAX_RANK] = {0}, cnt[GM_H5_MAX_RANK];
    H5Sget_simple_extent_dims(fs, dims, NULL);
    if (rank < 1 || first + count > dims[0]) {
        H5Sclose(fs);
        return gm_error_set(err, GM_EINVAL, "%s: rows %llu..%llu are outside a dataset of %llu rows",
                            gm_h5_filename(dset, f, sizeof f), (unsigned long long)first,
                            (unsigned long long)(first + count), (unsigned long long)dims[0]);
    }
    for (int i = 0; i < rank; i++) cnt[i] = dims[i];
    start[0] = first;
    cnt[0] = count;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t rc = H5Dwrite(dset, type, ms, fs, H5P_DEFAULT, data);
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc < 0) return gm_error_set(err, GM_EIO, "%s: writing rows failed (disk full?)", gm_h5_filename(dset, f, sizeof f));
    return GM_OK;
}

gm_status gm_h5_shape(hid_t loc, const char *name, int *rank, hsize_t *dims, gm_error *err)
{
    quiet();
    char f[1024];
    if (!gm_h5_exists(loc, name)) return missing(loc, "dataset", name, err);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return gm_error_set(err, GM_EFORMAT, "%s: \"%s\" is not a dataset", gm_h5_filename(loc, f, sizeof f), name);
    hid_t s = H5Dget_space(d);
    int r = H5Sget_simple_extent_ndims(s);
    gm_status st = GM_OK;
    if (r < 0 || r > GM_H5_MAX_RANK)
        st = gm_error_set(err, GM_EFORMAT, "%s: dataset \"%s\" has an unsupported rank", gm_h5_filename(loc, f, sizeof f), name);
    else {
        *rank = r;
        H5Sget_simple_extent_dims(s, dims, NULL);
    }
    H5Sclose(s);
    H5Dclose(d);
    return st;
}

gm_status gm_h5_read(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, void *data,
                     gm_error *err)
{
    char f[1024];
    int r;
    hsize_t have[GM_H5_MAX_RANK];
    gm_status st = gm_h5_shape(loc, name, &r, have, err);
    if (st != GM_OK) return st;
    int same = r == rank;
    for (int i = 0; same && i < r; i++) same = have[i] == dims[i];
    if (!same) {
        char a[128] = "", b[128] = "";
        for (int i = 0; i < r && i < 8; i++)
            snprintf(a + strlen(a), sizeof a - strlen(a), "%s%llu", i ? "x" : "", (unsigned long long)have[i]);
        for (int i = 0; i < rank && i < 8; i++)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s%llu", i ? "x" : "", (unsigned long long)dims[i]);
        return gm_error_set(err, GM_EFORMAT, "%s: dataset \"%s\" has shape %s, expected %s",
                            gm_h5_filename(loc, f, sizeof f), name, r ? a : "scalar", rank ? b : "scalar");
    }
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    herr_t rc = H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    if (rc < 0)
        return gm_error_set(err, GM_EFORMAT, "%s: dataset \"%s\" cannot be read (damaged, or not numeric)",
                            gm_h5_filename(loc, f, sizeof f), name);
    return GM_OK;
}
