/*
 * gm_tb: TensorBoard event files, so `tensorboard --logdir runs/` shows a
 * sweep while it runs (coordinator/README.md, "Running a search", the run folder).
 *
 * An event file is a sequence of records: the payload's length (uint64, little
 * endian), the masked CRC-32C of those 8 bytes, the payload, and its masked
 * CRC-32C; each payload is a serialised Event (gm_tb_event.proto, packed with
 * protobuf-c). The first event names the format ("brain.Event:2"); each later
 * one holds one scalar: a tag, a step and the wall time. Records are flushed
 * as they are written, so a reader sees every finished candidate; a writer
 * killed mid-record leaves a torn last record, which TensorBoard skips.
 *
 * One writer, one file: DIR/events.out.tfevents.<seconds>.<host>.<pid>.gmorph
 * (TensorBoard reads every file whose name holds "tfevents"; a resumed sweep
 * adds a file beside the earlier ones, and TensorBoard merges them).
 */
#ifndef GM_TB_H
#define GM_TB_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h"

typedef struct gm_tb gm_tb;

/* Creates the event file in dir (which must exist) and writes its first event. */
gm_status gm_tb_open(gm_tb **w, const char *dir, gm_error *err);
/* One scalar; wall_time in seconds since the epoch (0: now). */
gm_status gm_tb_scalar(gm_tb *w, const char *tag, int64_t step, double wall_time, double value, gm_error *err);
/* The path of the file (for messages). */
const char *gm_tb_path(const gm_tb *w);
void gm_tb_close(gm_tb *w);

/* CRC-32C (Castagnoli) of n bytes, and the masked form event records store. */
uint32_t gm_tb_crc32c(const void *data, size_t n);
uint32_t gm_tb_mask(uint32_t crc);

#endif
