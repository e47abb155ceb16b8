/* virtnbd-plugin.c: nbdkit plugin serving a virtnbdbackup chain (saveset files) as one disk.
 *
 * Design (docs/PROTOCOL.md, ARCHITECTURE.md "The plugin shim and its Node worker"):
 * - The chain is understood by Node: in .after_fork we open and check every file, then start
 *   worker 0 (`node worker.js --resolve --fds=4 FILE...`) on a socketpair (its fd 3), handing it
 *   our descriptors (fds 4..). It indexes them, resolves the chain and sends a binary extent
 *   table: zero / raw (file, offset) / lz4 (frame, slice), validated by vnbd-table.c.
 * - The shim owns the whole read path: zero ranges, raw ranges (binary search + pread on our own
 *   O_RDONLY fds) and LZ4 ranges (vnbd-lz4.c: pread + liblz4 with checksums, bounded cache of
 *   decoded frames). Worker 0 is stopped once the table is loaded.
 * - lz4=worker (the earlier path, kept as a fallback): LZ4 ranges go to Node workers instead; all
 *   requests for one frame go to the same worker so its frame cache works. Each worker is used
 *   under its own mutex, one request at a time (the worker is synchronous).
 * - Before each read a file is checked (at most every recheck= ms): truncated or replaced → EIO.
 * - Every wait for a worker is bounded by poll() and `timeout=`. Any transport failure (EOF,
 *   short/malformed answer, timeout) fails the request with EIO, SIGKILLs the worker's process
 *   group, reaps it and marks it dead; the next request needing it starts a new one (--serve).
 * - Between fork and exec the child only makes async-signal-safe calls; argv is built in
 *   .config_complete. Everything we open is O_CLOEXEC.
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "vnbd-lz4.h"
#include "vnbd-table.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#define MAX_WORKERS 16
#define MAX_COUNT (UINT32_C(64) << 20)      /* bytes per worker request */
#define MAX_MSG (UINT32_C(64) << 10)        /* error message from a worker */
#define REQ_MAGIC UINT32_C(0x5244524e)
#define REQ_LEN 40
#define FD_BASE 4                           /* the workers see file i as fd FD_BASE + i */
#define DEFAULT_CACHE (UINT64_C(256) << 20)
/* block_size: any byte is readable (minimum 1); 64 KiB preferred: the cow filter's block size
 * and the point where our reads get close to the file plugin; 32 MiB maximum: the maximum every
 * NBD client assumes and the size of one LZ4 chunk of the format, so a maximal request touches
 * at most two frames. */
#define BLOCK_PREFERRED (UINT32_C(64) << 10)
#define BLOCK_MAXIMUM (UINT32_C(32) << 20)

enum { KIND_ZERO = VNBD_ZERO, KIND_RAW = VNBD_RAW, KIND_LZ4 = VNBD_LZ4 };
#define extent vnbd_extent

/* A file of the chain as the shim opened and checked it. */
struct chain_file {
  int fd;                       /* O_RDONLY|O_CLOEXEC; the workers inherit it as FD_BASE + index */
  dev_t dev;
  ino_t ino;
  uint64_t size;                /* at start-up; a smaller size later means truncated → EIO */
  _Atomic int64_t checked_ms;   /* when check_file last found it unchanged (CLOCK_MONOTONIC) */
};

struct worker {
  pthread_mutex_t lock;
  pid_t pid;                    /* <= 0: not running */
  int fd;                       /* our end of the socketpair, O_NONBLOCK */
};

extern char **environ;

/* Lock errors are programming errors (EDEADLK, EINVAL): stop loudly. */
#define LOCK(m) do { if (pthread_mutex_lock (m) != 0) abort (); } while (0)
#define UNLOCK(m) do { if (pthread_mutex_unlock (m) != 0) abort (); } while (0)
#define UNUSED __attribute__ ((unused))
#define FAIL(...) do { nbdkit_error (__VA_ARGS__); return -1; } while (0)

/* Configuration (.config, .config_complete). */
static char **files;
static size_t nfiles;
static char *node_path;
static char *worker_path;
static unsigned nworkers = 2;
static unsigned timeout_s = 60;
static bool hexdump;
static bool lz4_in_worker;      /* lz4=worker: the old path, LZ4 decoded by the Node workers */
static uint64_t cache_bytes = DEFAULT_CACHE;
static unsigned ndecoders;      /* 0: number of online CPUs (at most 16) */
static unsigned recheck_ms = 100;
static char **argv_resolve, **argv_serve;
static int devnull = -1;
static char fds_arg[32];

/* State built in .after_fork; read-only afterwards except workers[] (under their locks). */
static struct extent *table;
static uint64_t nextents;
static uint64_t export_size;
static struct chain_file *cfiles;
static int *child_fds;          /* scratch for the child between fork and exec (nfiles + 2) */
static struct worker workers[MAX_WORKERS];

static void virtnbd_load (void)
{
  for (unsigned i = 0; i < MAX_WORKERS; i++) {
    if (pthread_mutex_init (&workers[i].lock, NULL) != 0) abort ();
    workers[i].pid = -1;
    workers[i].fd = -1;
  }
}

static int virtnbd_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    char **f = realloc (files, (nfiles + 1) * sizeof *files);
    if (f == NULL) FAIL ("realloc: %m");
    files = f;
    if ((files[nfiles] = nbdkit_absolute_path (value)) == NULL) return -1;
    nfiles++;
  }
  else if (strcmp (key, "node") == 0 || strcmp (key, "worker") == 0) {
    char **dst = key[0] == 'n' ? &node_path : &worker_path;
    /* A bare node name is looked up in PATH in .config_complete. */
    char *p = (key[0] == 'w' || strchr (value, '/')) ? nbdkit_absolute_path (value) : strdup (value);
    if (p == NULL) FAIL ("%s: %m", key);
    free (*dst);
    *dst = p;
  }
  else if (strcmp (key, "workers") == 0) {
    if (nbdkit_parse_unsigned ("workers", value, &nworkers) == -1) return -1;
    if (nworkers < 1 || nworkers > MAX_WORKERS)
      FAIL ("workers=%u: must be between 1 and %d", nworkers, MAX_WORKERS);
  }
  else if (strcmp (key, "timeout") == 0) {
    if (nbdkit_parse_unsigned ("timeout", value, &timeout_s) == -1) return -1;
    if (timeout_s < 1 || timeout_s > 86400)
      FAIL ("timeout=%u: must be between 1 and 86400 seconds", timeout_s);
  }
  else if (strcmp (key, "hexdump") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1) return -1;
    hexdump = r;
  }
  else if (strcmp (key, "lz4") == 0) {
    if (strcmp (value, "shim") == 0) lz4_in_worker = false;
    else if (strcmp (value, "worker") == 0) lz4_in_worker = true;
    else FAIL ("lz4=%s: must be 'shim' or 'worker'", value);
  }
  else if (strcmp (key, "cache") == 0) {
    const int64_t v = nbdkit_parse_size (value);
    if (v == -1) return -1;
    cache_bytes = (uint64_t) v;
  }
  else if (strcmp (key, "recheck") == 0) {
    if (nbdkit_parse_unsigned ("recheck", value, &recheck_ms) == -1) return -1;
    if (recheck_ms > 60000) FAIL ("recheck=%u: at most 60000 ms", recheck_ms);
  }
  else if (strcmp (key, "decoders") == 0) {
    if (nbdkit_parse_unsigned ("decoders", value, &ndecoders) == -1) return -1;
    if (ndecoders < 1 || ndecoders > 64) FAIL ("decoders=%u: must be between 1 and 64", ndecoders);
  }
  else
    FAIL ("unknown parameter '%s'", key);
  return 0;
}

/* Find a bare program name in $PATH (before fork: execve only, no execvp in the child). */
static char *search_path (const char *name)
{
  const char *path = getenv ("PATH");
  if (path == NULL || *path == '\0') path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    size_t len = strcspn (path, ":");
    char *cand;
    if (asprintf (&cand, "%.*s/%s", (int) len, len ? path : ".", name) == -1) return NULL;
    struct stat st;
    if (access (cand, X_OK) == 0 && stat (cand, &st) == 0 && S_ISREG (st.st_mode)) {
      char *abs = nbdkit_absolute_path (cand);
      free (cand);
      return abs;
    }
    free (cand);
    path += len;
    if (*path == ':') path++;
  }
  return NULL;
}

static char **build_argv (const char *mode)
{
  char **argv = calloc (nfiles + 5, sizeof *argv);
  if (argv == NULL) { nbdkit_error ("calloc: %m"); return NULL; }
  argv[0] = node_path;          /* borrowed pointers: freed with their owners */
  argv[1] = worker_path;
  argv[2] = (char *) mode;
  argv[3] = fds_arg;            /* --fds=4: file i is the inherited descriptor 4 + i */
  for (size_t i = 0; i < nfiles; i++) argv[4 + i] = files[i];
  return argv;
}

static int virtnbd_config_complete (void)
{
  if (nfiles == 0) FAIL ("at least one file=PATH is required");
  if (node_path == NULL && (node_path = strdup ("node")) == NULL)
    FAIL ("strdup: %m");
  if (strchr (node_path, '/') == NULL) {
    char *p = search_path (node_path);
    if (p == NULL) FAIL ("node=%s: not found in PATH; pass node=/path/to/node", node_path);
    free (node_path);
    node_path = p;
  }
  if (access (node_path, X_OK) == -1) FAIL ("node=%s: %m", node_path);
  if (worker_path == NULL) {       /* <dir of this .so>/../../dist/src/worker/worker.js */
    Dl_info info;
    char *guess;
    if (dladdr ((void *) virtnbd_config, &info) == 0 || info.dli_fname == NULL ||
        strchr (info.dli_fname, '/') == NULL)
      FAIL ("cannot locate the plugin file (dladdr); pass worker=PATH");
    const int dirlen = (int) (strrchr (info.dli_fname, '/') - info.dli_fname);
    if (asprintf (&guess, "%.*s/../../dist/src/worker/worker.js", dirlen, info.dli_fname) == -1)
      FAIL ("asprintf: %m");
    if ((worker_path = realpath (guess, NULL)) == NULL)
      nbdkit_error ("worker script %s: %m (run 'npm run build', or pass worker=PATH)", guess);
    free (guess);
    if (worker_path == NULL) return -1;
  }
  if (access (worker_path, R_OK) == -1) FAIL ("worker=%s: %m", worker_path);
  if (nfiles > 4096) FAIL ("%zu files: at most 4096 files per chain", nfiles);
  snprintf (fds_arg, sizeof fds_arg, "--fds=%d", FD_BASE);
  if (ndecoders == 0) {
    const long cpus = sysconf (_SC_NPROCESSORS_ONLN);
    ndecoders = cpus < 1 ? 1 : cpus > 16 ? 16 : (unsigned) cpus;
  }
  if ((argv_resolve = build_argv ("--resolve")) == NULL ||
      (argv_serve = build_argv ("--serve")) == NULL)
    return -1;
  devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull == -1) FAIL ("/dev/null: %m");
  return 0;
}

#define virtnbd_config_help \
  "file=PATH        (required, repeatable) saveset file of the chain, oldest first\n" \
  "node=PATH        Node executable for the workers (default: node in PATH)\n" \
  "worker=PATH      worker script (default: <plugin dir>/../../dist/src/worker/worker.js)\n" \
  "workers=N        with lz4=worker: worker processes for compressed data, 1-16 (default 2)\n" \
  "timeout=SECONDS  maximum wait for a worker answer (default 60)\n" \
  "hexdump=BOOL     hexdump served data with nbdkit_debug (needs -v)\n" \
  "lz4=shim|worker  who decodes LZ4 frames: the plugin itself (default) or the Node workers\n" \
  "cache=SIZE       decoded LZ4 frames kept in memory, e.g. 256M (default), 0 = none\n" \
  "decoders=N       LZ4 frames decoded at once (default: number of CPUs, at most 16)\n" \
  "recheck=MS       check a file for truncation/replacement at most every MS ms (default 100, 0 = every read)"

/* ---- I/O helpers: every wait bounded by an absolute CLOCK_MONOTONIC deadline ---- */

static int64_t now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 0 when fd is ready (or has an error/hangup to report); -1 with errno (ETIMEDOUT). */
static int wait_fd (int fd, short events, int64_t deadline)
{
  for (;;) {
    int64_t left = deadline - now_ms ();
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    struct pollfd p = { .fd = fd, .events = events };
    int r = poll (&p, 1, left > INT_MAX ? INT_MAX : (int) left);
    if (r == -1 && errno != EINTR) return -1;
    if (r > 0) return 0;
  }
}

/* 0: all n bytes read; -1: error with errno (EOF → EPIPE). */
static int sock_read (int fd, void *buf, size_t n, int64_t deadline)
{
  char *p = buf;
  while (n > 0) {
    ssize_t r = read (fd, p, n);
    if (r > 0) { p += r; n -= (size_t) r; continue; }
    if (r == 0) { errno = EPIPE; return -1; }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (wait_fd (fd, POLLIN, deadline) == -1) return -1;
  }
  return 0;
}

static int sock_write (int fd, const void *buf, size_t n, int64_t deadline)
{
  const char *p = buf;
  while (n > 0) {
    ssize_t r = send (fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) { p += r; n -= (size_t) r; continue; }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (wait_fd (fd, POLLOUT, deadline) == -1) return -1;
  }
  return 0;
}

static uint32_t get32 (const unsigned char *p)
{ return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24; }
static void put32 (unsigned char *p, uint32_t v)
{ p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static void put64 (unsigned char *p, uint64_t v)
{ put32 (p, (uint32_t) v); put32 (p + 4, (uint32_t) (v >> 32)); }

/* ---- Worker processes ---- */

/* Why a worker transport failed (thread-safe; buf receives strerror_r text if needed). */
static const char *failure (int err, char *buf, size_t len)
{
  switch (err) {
  case EPIPE: return "the worker exited";
  case ETIMEDOUT: return "timed out";
  case EPROTO: return "malformed answer";
  default: return strerror_r (err, buf, len);
  }
}

/* Kill the worker's process group, reap it, close our end. Caller holds w->lock (or is alone). */
static void stop_worker (struct worker *w)
{
  if (w->fd >= 0) close (w->fd);
  w->fd = -1;
  if (w->pid > 0) {
    /* ESRCH from either kill is expected (already dead / no group yet): nothing to check. */
    kill (-w->pid, SIGKILL);
    kill (w->pid, SIGKILL);
    while (waitpid (w->pid, NULL, 0) == -1 && errno == EINTR)
      ;                         /* ECHILD (SIGCHLD ignored): nothing to reap */
    w->pid = -1;
  }
}

static int start_worker (unsigned idx, char **argv)
{
  struct worker *w = &workers[idx];
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    FAIL ("socketpair: %m");
  if (sv[1] < 3) {              /* stdio closed?! keep the child's dup2 calls from colliding */
    int fd = fcntl (sv[1], F_DUPFD_CLOEXEC, 3);
    close (sv[1]);
    if (fd == -1) { nbdkit_error ("fcntl: %m"); close (sv[0]); return -1; }
    sv[1] = fd;
  }
  /* PR_SET_PDEATHSIG fires when the *thread* that forked exits: only use it from the main
   * thread (.after_fork). Workers started from a connection thread rely on EOF of fd 3. */
  const bool deathsig = syscall (SYS_gettid) == getpid ();
  const pid_t parent = getpid ();
  sigset_t empty;
  sigemptyset (&empty);

  pid_t pid = fork ();
  if (pid == -1) { nbdkit_error ("fork: %m"); close (sv[0]); close (sv[1]); return -1; }
  if (pid == 0) {
    /* Child: async-signal-safe calls only. */
    static const char msg[] = "virtnbd: cannot set up or exec the Node worker\n";
    /* stdin /dev/null, stdout → stderr (nbdkit's stdout may be the NBD socket: -s), the socket
     * as fd 3, file i as fd FD_BASE + i. First every source moves above the targets (close-on-
     * exec copies), so that no dup2 overwrites a source still needed. */
    const int high = FD_BASE + (int) nfiles;
    int *tmp = child_fds;
    if ((tmp[0] = fcntl (devnull, F_DUPFD_CLOEXEC, high)) == -1 ||
        (tmp[1] = fcntl (sv[1], F_DUPFD_CLOEXEC, high)) == -1)
      _exit (127);
    for (size_t i = 0; i < nfiles; i++)
      if ((tmp[2 + i] = fcntl (cfiles[i].fd, F_DUPFD_CLOEXEC, high)) == -1) _exit (127);
    if (dup2 (tmp[0], 0) == -1 || dup2 (2, 1) == -1 || dup2 (tmp[1], 3) == -1) _exit (127);
    for (size_t i = 0; i < nfiles; i++)
      if (dup2 (tmp[2 + i], FD_BASE + (int) i) == -1) _exit (127);
    sigprocmask (SIG_SETMASK, &empty, NULL);
    signal (SIGPIPE, SIG_DFL);
    setpgid (0, 0);
    if (deathsig) {
      prctl (PR_SET_PDEATHSIG, SIGKILL);
      if (getppid () != parent) _exit (127);
    }
    execve (argv[0], argv, environ);
    if (write (2, msg, sizeof msg - 1) < 0) { /* nothing more we can do */ }
    _exit (127);
  }
  close (sv[1]);
  setpgid (pid, pid);           /* closes the race with the child's own call; EACCES after exec */
  w->pid = pid;
  w->fd = sv[0];
  int fl = fcntl (sv[0], F_GETFL);
  if (fl == -1 || fcntl (sv[0], F_SETFL, fl | O_NONBLOCK) == -1) {
    nbdkit_error ("fcntl: %m");
    stop_worker (w);
    return -1;
  }
  nbdkit_debug ("virtnbd: started worker %u (pid %d) %s", idx, (int) pid, argv[2]);
  return 0;
}

/* Read a worker's error body (≤ MAX_MSG) and log it. -1 if the transport failed. */
static int log_worker_error (struct worker *w, uint32_t len, int64_t deadline, const char *what)
{
  char *msg = malloc (len + 1);
  if (msg == NULL) FAIL ("malloc: %m");
  if (sock_read (w->fd, msg, len, deadline) == -1) { free (msg); return -1; }
  msg[len] = '\0';
  nbdkit_error ("virtnbd: %s: %s", what, msg);
  free (msg);
  return 0;
}

/* Ask a worker for `count` bytes at `slice` of the decoded LZ4 frame of extent e, into buf. */
static int worker_read (const struct extent *e, uint64_t slice, uint32_t count, void *buf)
{
  const unsigned idx = (unsigned) ((e->file_offset / 4096 + e->file) % nworkers);
  struct worker *w = &workers[idx];
  const char *fname = files[e->file];
  const char *stage = "sending the request";
  unsigned char req[REQ_LEN] = { 0 }, hdr[8];
  uint32_t status, len;
  int err;

  put32 (req, REQ_MAGIC);
  put32 (req + 4, e->file);
  put64 (req + 8, e->file_offset);
  put32 (req + 16, e->csize);
  put32 (req + 20, e->usize);
  put64 (req + 24, slice);
  put32 (req + 32, count);

  LOCK (&w->lock);
  /* A worker that vanished before answering (killed, crashed) is replaced and the request is sent
   * once more: reads are idempotent, and an idle worker's death can race with the check below. */
  for (int attempt = 0; ; attempt++) {
  struct pollfd idle = { .fd = w->fd, .events = POLLIN };
  if (w->pid > 0 && poll (&idle, 1, 0) != 0) {
    /* An idle worker is silent: readable or hung up means it died (or is out of step). */
    nbdkit_debug ("virtnbd: worker %u (pid %d) exited while idle, restarting it", idx, (int) w->pid);
    stop_worker (w);
  }
  if (w->pid <= 0 && start_worker (idx, argv_serve) == -1) {
    UNLOCK (&w->lock);
    nbdkit_set_error (EIO);
    return -1;
  }
  const pid_t pid = w->pid;
  const int64_t deadline = now_ms () + (int64_t) timeout_s * 1000;
  bool answered = false;
  stage = "sending the request";
  if (sock_write (w->fd, req, sizeof req, deadline) == -1) goto broken;
  stage = "reading the answer header";
  if (sock_read (w->fd, hdr, sizeof hdr, deadline) == -1) goto broken;
  answered = true;
  status = get32 (hdr);
  len = get32 (hdr + 4);
  if (status != 0) {
    stage = "reading the error message";
    if (len > MAX_MSG) { errno = EPROTO; goto broken; }
    if (log_worker_error (w, len, deadline, "worker") == -1) goto broken;  /* names file+offset */
    UNLOCK (&w->lock);
    nbdkit_set_error (status == ENOMEM ? ENOMEM : EIO);
    return -1;
  }
  stage = "reading the data";
  if (len != count) { errno = EPROTO; goto broken; }
  if (sock_read (w->fd, buf, count, deadline) == -1) goto broken;
  UNLOCK (&w->lock);
  return 0;

 broken:
  err = errno;
  if (attempt == 0 && !answered && (err == EPIPE || err == ECONNRESET)) {
    nbdkit_debug ("virtnbd: worker %u (pid %d) vanished before answering; retrying on a new worker",
                  idx, (int) pid);
    stop_worker (w);
    continue;
  }
  char eb[128];
  nbdkit_error ("virtnbd: worker %u (pid %d) failed %s for the frame at offset %" PRIu64
                " of %s: %s; killing it (restarted on the next request)",
                idx, (int) pid, stage, e->file_offset, fname, failure (err, eb, sizeof eb));
  stop_worker (w);
  UNLOCK (&w->lock);
  nbdkit_set_error (EIO);
  return -1;
  }
}

/* ---- Start-up: resolve the chain in worker 0, validate the table ---- */

static void virtnbd_cleanup (void);

static int resolve_chain (void)
{
  struct worker *w = &workers[0];
  unsigned char hdr[8];
  if (start_worker (0, argv_resolve) == -1) return -1;
  const int64_t deadline = now_ms () + (int64_t) timeout_s * 1000;
  if (sock_read (w->fd, hdr, sizeof hdr, deadline) == -1) goto broken;
  const uint32_t status = get32 (hdr), len = get32 (hdr + 4);
  if (status != 0) {
    if (len > MAX_MSG) {
      nbdkit_error ("virtnbd: the worker's error message has %" PRIu32 " bytes (at most %" PRIu32
                    " allowed)", len, MAX_MSG);
      stop_worker (w);
      return -1;
    }
    if (log_worker_error (w, len, deadline, "cannot resolve the chain") == -1) goto broken;
    stop_worker (w);
    return -1;
  }
  unsigned char *t = malloc (len ? len : 1);
  if (t == NULL) { nbdkit_error ("malloc: %m"); stop_worker (w); return -1; }
  if (sock_read (w->fd, t, len, deadline) == -1) {
    const int err = errno;
    free (t);
    errno = err;
    goto broken;
  }
  const char **paths = malloc (nfiles * sizeof *paths);
  uint64_t *sizes = malloc (nfiles * sizeof *sizes);
  int r = -1;
  if (paths == NULL || sizes == NULL) nbdkit_error ("malloc: %m");
  else {
    for (size_t i = 0; i < nfiles; i++) {
      paths[i] = files[i];
      sizes[i] = cfiles[i].size;
    }
    char err[512];
    r = vnbd_parse_table (t, len, nfiles, paths, sizes, &table, &nextents, &export_size,
                          err, sizeof err);
    if (r == -1) nbdkit_error ("virtnbd: %s (from the worker, pid %d)", err, (int) w->pid);
  }
  free (paths);
  free (sizes);
  free (t);
  if (r == -1) stop_worker (w);
  return r;

 broken:;
  char eb[128];
  const char *why = failure (errno, eb, sizeof eb);
  nbdkit_error ("virtnbd: no extent table from the worker (pid %d): %s", (int) w->pid, why);
  stop_worker (w);
  return -1;
}

/* Open and check every file; the workers get these very descriptors. */
static int open_files (void)
{
  if ((cfiles = calloc (nfiles, sizeof *cfiles)) == NULL ||
      (child_fds = calloc (nfiles + 2, sizeof *child_fds)) == NULL)
    FAIL ("calloc: %m");
  for (size_t i = 0; i < nfiles; i++) cfiles[i].fd = -1;
  for (size_t i = 0; i < nfiles; i++) {
    struct stat st;
    if ((cfiles[i].fd = open (files[i], O_RDONLY | O_CLOEXEC)) == -1 ||
        fstat (cfiles[i].fd, &st) == -1)
      FAIL ("%s: %m", files[i]);
    if (!S_ISREG (st.st_mode)) FAIL ("%s: not a regular file", files[i]);
    cfiles[i].dev = st.st_dev;
    cfiles[i].ino = st.st_ino;
    cfiles[i].size = (uint64_t) st.st_size;
  }
  return 0;
}

static int after_fork (void)
{
  if (open_files () == -1 || resolve_chain () == -1) return -1;
  if (lz4_in_worker) {
    for (unsigned i = 1; i < nworkers; i++)
      if (start_worker (i, argv_serve) == -1) return -1;
  }
  else {
    stop_worker (&workers[0]);  /* resolution done; LZ4 is decoded here */
    if (vnbd_lz4_init (cache_bytes, ndecoders) == -1) FAIL ("calloc: %m");
  }
  nbdkit_debug ("virtnbd: %zu files, %" PRIu64 " extents, size %" PRIu64 ", LZ4 decoded by %s",
                nfiles, nextents, export_size, lz4_in_worker ? "workers" : "the shim");
  return 0;
}

static int virtnbd_after_fork (void)
{
  if (after_fork () == 0) return 0;
  virtnbd_cleanup ();
  return -1;
}

static void virtnbd_cleanup (void)
{
  for (unsigned i = 0; i < MAX_WORKERS; i++) {
    LOCK (&workers[i].lock);
    stop_worker (&workers[i]);
    UNLOCK (&workers[i].lock);
  }
  if (!lz4_in_worker) {
    struct vnbd_lz4_stats st;
    vnbd_lz4_stats (&st);
    nbdkit_debug ("virtnbd: LZ4 cache: %" PRIu64 " hits, %" PRIu64 " decodes, %" PRIu64
                  " waits for a decode, peak %" PRIu64 " bytes", st.hits, st.misses, st.waits,
                  st.peak_bytes);
    vnbd_lz4_free ();
  }
  if (cfiles) {
    for (size_t i = 0; i < nfiles; i++)
      if (cfiles[i].fd >= 0) close (cfiles[i].fd);
    free (cfiles);
    cfiles = NULL;
  }
  free (child_fds);
  child_fds = NULL;
  free (table);
  table = NULL;
  nextents = 0;
}

static void virtnbd_unload (void)
{
  virtnbd_cleanup ();
  for (unsigned i = 0; i < MAX_WORKERS; i++) pthread_mutex_destroy (&workers[i].lock);
  free (argv_resolve);
  free (argv_serve);
  for (size_t i = 0; i < nfiles; i++) free (files[i]);
  free (files);
  free (node_path);
  free (worker_path);
  if (devnull >= 0) close (devnull);
}

/* ---- Serving ---- */

static void *virtnbd_open (int readonly UNUSED) { return NBDKIT_HANDLE_NOT_NEEDED; }
static int64_t virtnbd_get_size (void *handle UNUSED) { return (int64_t) export_size; }
/* Read-only, no per-connection state: every connection sees the same data. */
static int virtnbd_can_multi_conn (void *handle UNUSED) { return 1; }
static int virtnbd_can_extents (void *handle UNUSED) { return 1; }

static int virtnbd_block_size (void *handle UNUSED,
                               uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  *preferred = BLOCK_PREFERRED;
  *maximum = BLOCK_MAXIMUM;
  return 0;
}

/* Index of the extent containing offset (offset < export_size). */
static uint64_t find_extent (uint64_t offset)
{
  uint64_t lo = 0, hi = nextents - 1;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo + 1) / 2;
    if (table[mid].start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* The file is still the one checked at start-up: same inode at its path, not shorter. The data
 * of a file replaced (renamed over) or truncated while served is refused rather than served.
 * Checked at most every recheck_ms per file (two syscalls, one a path lookup: measurable at tens
 * of thousands of reads per second); a failed check is repeated on every read. */
static int check_file (uint32_t idx)
{
  struct chain_file *f = &cfiles[idx];
  const int64_t now = recheck_ms ? now_ms () : 0;
  if (recheck_ms && now - atomic_load_explicit (&f->checked_ms, memory_order_relaxed) < (int64_t) recheck_ms)
    return 0;
  struct stat st;
  if (fstat (f->fd, &st) == -1) {
    nbdkit_error ("%s: fstat: %m", files[idx]);
    nbdkit_set_error (EIO);
    return -1;
  }
  if ((uint64_t) st.st_size < f->size) {
    nbdkit_error ("%s: the file was truncated after it was mapped (%" PRIu64 " bytes, was %"
                  PRIu64 ")", files[idx], (uint64_t) st.st_size, f->size);
    nbdkit_set_error (EIO);
    return -1;
  }
  if (stat (files[idx], &st) == -1 || st.st_dev != f->dev || st.st_ino != f->ino) {
    nbdkit_error ("%s: the file was replaced or removed after it was mapped", files[idx]);
    nbdkit_set_error (EIO);
    return -1;
  }
  if (recheck_ms) atomic_store_explicit (&f->checked_ms, now, memory_order_relaxed);
  return 0;
}

static int read_lz4 (const struct extent *e, uint64_t in, char *p, uint32_t n)
{
  char err[512];
  if (vnbd_lz4_read (e->file, cfiles[e->file].fd, e->file_offset, e->csize, e->usize,
                     e->slice_offset + in, n, p, err, sizeof err) == 0)
    return 0;
  const int saved = errno;
  nbdkit_error ("%s: %s", files[e->file], err);
  nbdkit_set_error (saved == ENOMEM ? ENOMEM : EIO);
  return -1;
}

static int read_raw (const struct extent *e, uint64_t in, char *p, uint32_t n)
{
  const int fd = cfiles[e->file].fd;
  uint64_t off = e->file_offset + in;
  while (n > 0) {
    ssize_t r = pread (fd, p, n, (off_t) off);
    if (r > 0) { p += r; n -= (uint32_t) r; off += (uint64_t) r; continue; }
    if (r == -1 && errno == EINTR) continue;
    if (r == 0)
      nbdkit_error ("%s: unexpected end of file at offset %" PRIu64
                    " (was the file truncated after it was mapped?)", files[e->file], off);
    else
      nbdkit_error ("%s: read error at offset %" PRIu64 ": %m", files[e->file], off);
    nbdkit_set_error (EIO);
    return -1;
  }
  return 0;
}

static void dump (const unsigned char *buf, uint32_t count, uint64_t offset)
{
  static const unsigned char zeros[16];
  uint64_t zero_lines = 0;
  for (uint64_t i = 0;; i += 16) {
    const uint32_t n = i >= count ? 0 : count - i < 16 ? (uint32_t) (count - i) : 16;
    if (n > 0 && memcmp (buf + i, zeros, n) == 0) {
      zero_lines++;
      continue;
    }
    if (zero_lines > 0) {       /* a run of all-zero lines: one summary line */
      const uint64_t from = i - zero_lines * 16, to = i < count ? i : count;
      nbdkit_debug ("virtnbd: %016" PRIx64 ": * %" PRIu64 " zero bytes", offset + from, to - from);
      zero_lines = 0;
    }
    if (n == 0) break;
    char hex[16 * 3 + 1], ascii[17];
    for (uint32_t j = 0; j < 16; j++) {
      const unsigned char c = j < n ? buf[i + j] : ' ';
      if (j < n) snprintf (hex + j * 3, 4, "%02x ", c);
      else memcpy (hex + j * 3, "   ", 4);
      ascii[j] = c >= 0x20 && c < 0x7f ? (char) c : '.';
    }
    ascii[16] = '\0';
    nbdkit_debug ("virtnbd: %016" PRIx64 ": %s |%s|", offset + i, hex, ascii);
  }
}

static int virtnbd_pread (void *handle UNUSED, void *buf, uint32_t count, uint64_t offset,
                          uint32_t flags UNUSED)
{
  if (offset > export_size || count > export_size - offset) {
    nbdkit_error ("virtnbd: read beyond the end of the disk");
    nbdkit_set_error (EIO);
    return -1;
  }
  char *p = buf;
  uint64_t pos = offset;
  uint32_t left = count;
  uint64_t i = left ? find_extent (offset) : 0;
  while (left > 0) {
    const struct extent *e = &table[i];
    const uint64_t in = pos - e->start;
    uint32_t n = e->length - in < left ? (uint32_t) (e->length - in) : left;
    if (n > MAX_COUNT) n = MAX_COUNT;
    int r = 0;
    if (e->kind != KIND_ZERO && check_file (e->file) == -1) return -1;
    switch (e->kind) {
    case KIND_ZERO: memset (p, 0, n); break;
    case KIND_RAW: r = read_raw (e, in, p, n); break;
    default:
      r = lz4_in_worker ? worker_read (e, e->slice_offset + in, n, p) : read_lz4 (e, in, p, n);
      break;
    }
    if (r == -1) return -1;
    p += n;
    pos += n;
    left -= n;
    if (pos == e->start + e->length) i++;
  }
  if (hexdump) dump (buf, count, offset);
  return 0;
}

static int virtnbd_extents (void *handle UNUSED, uint32_t count, uint64_t offset,
                            uint32_t flags, struct nbdkit_extents *exts)
{
  if (count == 0 || offset >= export_size) return 0;
  const uint64_t end = offset + count;
  int first = -1;
  for (uint64_t i = find_extent (offset); i < nextents && table[i].start < end; i++) {
    const int type = table[i].kind == KIND_ZERO ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
    if ((flags & NBDKIT_FLAG_REQ_ONE) && first != -1 && type != first) break;
    first = type;
    if (nbdkit_add_extent (exts, table[i].start, table[i].length, type) == -1) return -1;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "virtnbd",
  .longname = "virtnbd backup chain plugin",
  .version = "1.0",
  .description = "Serve a virtnbdbackup chain of saveset files as a read-only disk",
  .load = virtnbd_load,
  .unload = virtnbd_unload,
  .config = virtnbd_config,
  .config_complete = virtnbd_config_complete,
  .config_help = virtnbd_config_help,
  .magic_config_key = "file",
  .after_fork = virtnbd_after_fork,
  .cleanup = virtnbd_cleanup,
  .open = virtnbd_open,
  .get_size = virtnbd_get_size,
  .can_multi_conn = virtnbd_can_multi_conn,
  .can_extents = virtnbd_can_extents,
  .block_size = virtnbd_block_size,
  .pread = virtnbd_pread,
  .extents = virtnbd_extents,
};

NBDKIT_REGISTER_PLUGIN (plugin)
