/*
 * gm_h5: the thin layer over HDF5 that dataset, model and checkpoint files share.
 *
 * - Errors come back as gm_error messages naming the file and object; HDF5's own
 *   error stack is never printed (its automatic printing is switched off by every
 *   entry point here).
 * - Files are written atomically: gm_h5_create opens "<path>.tmp", gm_h5_commit
 *   closes it, fsyncs it and renames it over path, so a crash leaves either the old
 *   file or the new one, never half of one.
 * - Objects are created without modification times, so the same content written
 *   twice gives byte-identical files (reproducible datasets).
 * - Attributes and whole datasets are read and written in one call each; reading
 *   checks the stored size against what the caller expects.
 *
 * Handles (hid_t) returned here are owned by the caller and closed with
 * gm_h5_close_file, H5Gclose or H5Dclose.
 */
#ifndef GM_H5_H
#define GM_H5_H

#include <hdf5.h>
#include <stddef.h>

#include "gm_error.h"

enum { GM_H5_MAX_RANK = 8 };

/*
 * Creates "<path>.tmp" for writing (truncating an old temporary). The file is
 * built in memory and written out whole when committed (gm_h5_close_tmp), with
 * every write error checked: a full or read-only disk is an error naming the
 * file and the errno, never a half-written file or a crash inside HDF5.
 */
gm_status gm_h5_create(hid_t *file, const char *path, gm_error *err);
/*
 * The same, streamed to disk as it is written, for files too large to hold
 * (datasets); a full disk then fails inside HDF5's writes and close.
 */
gm_status gm_h5_create_stream(hid_t *file, const char *path, gm_error *err);
/* Closes a file from gm_h5_create and atomically renames it to path. */
gm_status gm_h5_commit(hid_t file, const char *path, gm_error *err);
/*
 * Commit in two steps, for a caller that finishes the closed file itself (fills
 * a user block) and keeps the previous file:
 * - gm_h5_create_ub: as gm_h5_create, with a user block of ub bytes (512, 1024,
 *   ...) at the start of the file, which HDF5, h5py and h5dump skip;
 * - gm_h5_close_tmp: closes the file, leaving "<path>.tmp" whole but not in place
 *   (a file in memory is written out here);
 * - gm_h5_install: fsyncs "<path>.tmp", renames an existing path to
 *   "<path>.prev" when keep_prev (replacing an older one), then renames the
 *   temporary to path. A crash at any moment leaves path or "<path>.prev" whole.
 * After an error in between, gm_h5_discard(-1, path) removes the temporary.
 */
gm_status gm_h5_create_ub(hid_t *file, const char *path, hsize_t ub, gm_error *err);
gm_status gm_h5_close_tmp(hid_t file, const char *path, gm_error *err);
gm_status gm_h5_install(const char *path, int keep_prev, gm_error *err);
/* Closes a file from gm_h5_create and removes the temporary (after an error). */
void gm_h5_discard(hid_t file, const char *path);

/*
 * Opens an existing file read-only (rw = 0) or read-write. A missing file, a file
 * that is not HDF5, and an HDF5 file that is truncated or damaged each get their
 * own message.
 */
gm_status gm_h5_open(hid_t *file, const char *path, int rw, gm_error *err);
void gm_h5_close_file(hid_t file);

/* 1 when the link path (may contain '/') exists under loc, else 0. */
int gm_h5_exists(hid_t loc, const char *path);

/* Creates a group with untracked times / opens an existing one. */
gm_status gm_h5_group_create(hid_t loc, const char *name, hid_t *group, gm_error *err);
gm_status gm_h5_group_open(hid_t loc, const char *name, hid_t *group, gm_error *err);

/* Attributes. Writing replaces an existing attribute of the same name. */
gm_status gm_h5_attr_write_ints(hid_t obj, const char *name, const long long *v, int n, gm_error *err);
gm_status gm_h5_attr_write_floats(hid_t obj, const char *name, const double *v, int n, gm_error *err);
gm_status gm_h5_attr_write_str(hid_t obj, const char *name, const char *s, gm_error *err);
gm_status gm_h5_attr_write_int(hid_t obj, const char *name, long long v, gm_error *err);
gm_status gm_h5_attr_write_float(hid_t obj, const char *name, double v, gm_error *err);
/* Reading: the attribute must exist and hold exactly n values. */
gm_status gm_h5_attr_read_ints(hid_t obj, const char *name, long long *v, int n, gm_error *err);
gm_status gm_h5_attr_read_floats(hid_t obj, const char *name, double *v, int n, gm_error *err);
/* A string attribute (fixed or variable length) into buf; too long is an error. */
gm_status gm_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t cap, gm_error *err);
/* A string attribute of any length into *s (malloc'd, the caller frees it; NULL after an error). */
gm_status gm_h5_attr_read_str_alloc(hid_t obj, const char *name, char **s, gm_error *err);
gm_status gm_h5_attr_read_int(hid_t obj, const char *name, long long *v, gm_error *err);
gm_status gm_h5_attr_read_float(hid_t obj, const char *name, double *v, gm_error *err);
/* Number of values an attribute holds, or -1 when it does not exist. */
long gm_h5_attr_count(hid_t obj, const char *name);

/*
 * Whole datasets, contiguous (so single rows read fast). type is a native memory
 * type (H5T_NATIVE_FLOAT, ...); the file type is the same type in little-endian.
 */
gm_status gm_h5_write(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, gm_error *err);
/* Creates an empty contiguous dataset to be filled with gm_h5_write_rows. */
gm_status gm_h5_create_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                               hid_t *dset, gm_error *err);
/* Writes rows [first, first+count) of a dataset along its first dimension. */
gm_status gm_h5_write_rows(hid_t dset, hid_t type, hsize_t first, hsize_t count, const void *data,
                           gm_error *err);
/* Shape of a dataset: rank and dims (up to GM_H5_MAX_RANK). */
gm_status gm_h5_shape(hid_t loc, const char *name, int *rank, hsize_t *dims, gm_error *err);
/* Reads a whole dataset whose shape must equal (rank, dims) exactly. */
gm_status gm_h5_read(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, void *data,
                     gm_error *err);

/* The file name of an object's file, for messages ("" when unknown). */
const char *gm_h5_filename(hid_t obj, char *buf, size_t cap);

#endif
