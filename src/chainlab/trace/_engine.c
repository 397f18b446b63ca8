/*
 * chainlab.trace._engine: the trace analyzer in C (see native.py for how Python drives it).
 *
 * It does what reader.py, assemble.py and the pipeline's bookkeeping do, for every format
 * (kernel log, xtables-monitor, nft monitor) and option, line for line and with the same
 * results: it parses and groups the lines into packets, classifies directions, applies
 * --match, keeps flows, summary rows and diagram walks, and writes the JSON. Python judges
 * each distinct walk once (native.Calls.judge). The Python modules stay the reference: tests
 * compare both engines' output byte for byte.
 *
 * Input is any bytes, as reader.py reads them: lines split at '\n', cut to LINE_LIMIT
 * bytes, trailing '\r' dropped, then made valid UTF-8 the way Python's "replace" decoding
 * does (each invalid sequence becomes U+FFFD), so that equal text here is equal text there.
 * Only ASCII whitespace separates words (trace/ascii.py).
 *
 * One Engine is fed file after file (begin(), feed() or feed_from()..., end(), then
 * flush()). A kernel log is read in two threads (see engine/parser_thread.c): the
 * parser thread reads and parses chunk k while the calling thread assembles chunk k-1.
 *
 * The parts in engine/ are included below, in order, each using what the ones before it
 * define: the engine stays one translation unit, so the compiler sees all of it and inlines
 * across parts (a build of the parts is the same machine code as the one file they were).
 * setup.py compiles this file only; the build's digest covers every part (engine_source.py).
 */
#define PY_SSIZE_T_CLEAN
#ifndef ENGINE_SOURCE
#error "build with setup.py: it defines ENGINE_SOURCE, the SHA-256 of this file and its parts"
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#define PARSER_THREAD 1
#endif
#ifdef _WIN32
#include <io.h>
#define read _read
#define write _write
#else
#include <sys/uio.h>
#include <unistd.h>
#endif
#include <errno.h>
#include <limits.h>


#define NONE (-1LL)
/* reader.LINE_LIMIT */
#define LINE_LIMIT (64 * 1024)

#include "engine/buffers.c"
#include "engine/text.c"
#include "engine/chars.c"
#include "engine/netfilter.c"
#include "engine/fields.c"
#include "engine/headers.c"
#include "engine/maps.c"
#include "engine/words.c"
#include "engine/monitor.c"
#include "engine/packets.c"
#include "engine/calls.c"
#include "engine/nodes.c"
#include "engine/finish.c"
#include "engine/lines.c"
#include "engine/parser_thread.c"
#include "engine/module.c"
