// NBD client over libnbd's asynchronous API.
//
// Threading (see native/README.md):
//  * JS thread: validates arguments and submits commands with nbd_aio_* (non-blocking; they
//    only take libnbd's handle lock for a moment), creates the promises, settles them.
//  * One I/O thread per connected handle drives libnbd's state machine: poll() on the
//    socket (direction from nbd_aio_get_direction) and on an eventfd, then
//    nbd_aio_notify_read/write. nbd_poll() is not used: it holds the handle lock while it
//    sleeps in poll(), which would block submissions from the JS thread (nbd_poll2 with a
//    wake-up fd only exists from libnbd 1.18). The handle lock is never held while sleeping
//    here, so any number of commands can be submitted while others are in flight.
//  * Completion: libnbd calls a command's completion callback and then its .free callback
//    exactly once (also when the command could not be queued, when the connection dies, or
//    when the handle is closed). .free posts the request to a ThreadSafeFunction; the JS
//    thread resolves or rejects its promise and drops the reference that kept the caller's
//    buffer alive.
//  * Blocking calls (connect, shutdown, close) run on the libuv thread pool.
#include "nbd.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace virtnbd {
namespace {

// ---------------------------------------------------------------------------------------
// Errors

const char* ErrnoName(int err) {
  const char* name = err > 0 ? strerrorname_np(err) : nullptr;
  return name != nullptr ? name : "EUNKNOWN";
}

std::string StrError(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof buf));  // GNU variant
}

// A JS Error with libnbd's message; `errno` (positive, as libnbd reports it) and `code`
// ('EIO', 'ENOTCONN', ...) when an errno is known.
Napi::Error MakeError(Napi::Env env, const std::string& msg, int err) {
  Napi::Error e = Napi::Error::New(env, msg);
  if (err > 0) {
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("code", Napi::String::New(env, ErrnoName(err)));
  }
  return e;
}

struct LibnbdError {
  std::string msg;
  int err = 0;
};

// Must be called on the thread where the libnbd call failed (the error is thread-local).
LibnbdError LastError(const char* what) {
  const char* m = nbd_get_error();
  LibnbdError e;
  e.msg = m != nullptr ? std::string(m) : std::string(what) + ": unknown libnbd error";
  e.err = nbd_get_errno();
  return e;
}

// ---------------------------------------------------------------------------------------
// Requests

class NbdHandle;
struct Core;

enum class Op { Pread, Pwrite, Zero, Trim, Flush, BlockStatus };

const char* OpName(Op op) {
  switch (op) {
    case Op::Pread: return "pread";
    case Op::Pwrite: return "pwrite";
    case Op::Zero: return "zero";
    case Op::Trim: return "trim";
    case Op::Flush: return "flush";
    case Op::BlockStatus: return "block_status";
  }
  return "?";
}

// One command in flight. Created on the JS thread, settled and deleted on the JS thread
// (or deleted anywhere without touching N-API during environment teardown).
struct Req {
  NbdHandle* owner = nullptr;
  Core* core = nullptr;
  Op op = Op::Pread;
  uint64_t offset = 0;
  uint64_t length = 0;
  napi_deferred deferred = nullptr;
  napi_ref buf = nullptr;  // keeps the caller's buffer alive while libnbd uses it
  bool completed = false;  // completion callback ran
  int error = 0;           // errno reported to the completion callback
  bool freedInSubmit = false;
  // block status: (context, [length, flags, length, flags, ...]) in delivery order
  std::vector<std::pair<std::string, std::vector<uint32_t>>> extents;
};

// The request whose nbd_aio_* call is running on this thread: if libnbd frees the callbacks
// before that call returns (it could not queue the command, or the connection died while
// sending), the submitting code settles the request itself.
thread_local Req* tlSubmitting = nullptr;

void CallJs(Napi::Env env, Napi::Function, Core* core, Req* req);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Req, CallJs>;

// Native resources shared by the JS object and the ThreadSafeFunction's finalizer (which,
// during environment teardown, runs before the object's destructor).
struct Core {
  Tsfn tsfn;
  std::mutex tsfnMu;
  bool tsfnGone = false;      // finalized: nobody may post any more (guarded by tsfnMu)
  bool tsfnReleased = false;  // JS thread only

  std::mutex ioMu;  // serializes StartIo/StopIo
  std::thread io;
  int efd = -1;
  std::atomic<bool> stop{false};

  std::mutex fatalMu;
  std::string fatal;  // why the connection died, if it did

  ~Core() {
    if (efd >= 0) close(efd);
  }

  void Wake() {
    uint64_t one = 1;
    if (efd >= 0 && write(efd, &one, sizeof one) < 0) {
      // EAGAIN: the counter is already non-zero, the I/O thread will wake anyway.
    }
  }

  void SetFatal(const std::string& msg) {
    std::lock_guard<std::mutex> l(fatalMu);
    if (fatal.empty()) fatal = msg;
  }

  std::string Fatal() {
    std::lock_guard<std::mutex> l(fatalMu);
    return fatal;
  }

  // Any thread. Hands a finished request to the JS thread.
  void Post(Req* r) {
    std::lock_guard<std::mutex> l(tsfnMu);
    if (tsfnGone || tsfn.NonBlockingCall(r) != napi_ok) delete r;
  }

  void StopIo() {
    std::lock_guard<std::mutex> l(ioMu);
    if (io.joinable()) {
      stop.store(true, std::memory_order_release);
      Wake();
      io.join();
    }
  }

  static void IoLoop(nbd_handle* h, Core* core);
};

void Core::IoLoop(nbd_handle* h, Core* core) {
  const int fd = nbd_aio_get_fd(h);
  if (fd < 0) {
    core->SetFatal(LastError("nbd_aio_get_fd").msg);
    return;
  }
  while (!core->stop.load(std::memory_order_acquire)) {
    if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) break;
    const unsigned dir = nbd_aio_get_direction(h);
    struct pollfd fds[2];
    fds[0].fd = fd;
    fds[0].events = static_cast<short>(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                       ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
    fds[0].revents = 0;
    if (fds[0].events == 0) fds[0].fd = -1;  // not waiting on the socket
    fds[1].fd = core->efd;
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    // Never expected in the transmission phase; the timeout only guards against a hang.
    const int r = poll(fds, 2, fds[0].fd < 0 ? 100 : -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      core->SetFatal(std::string("poll: ") + StrError(errno));
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      if (read(core->efd, &v, sizeof v) < 0) {
        // EAGAIN: drained already
      }
    }
    int rc = 0;
    // As nbd_poll does: a reply is for an older command than what we would write, so
    // prefer reading; the other event is seen again on the next round.
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      rc = nbd_aio_notify_read(h);
    } else if (fds[0].revents & POLLOUT) {
      rc = nbd_aio_notify_write(h);
    } else if (fds[0].revents & POLLNVAL) {
      core->SetFatal("NBD socket closed unexpectedly");
      break;
    }
    if (rc == -1) {
      LibnbdError e = LastError("notify");
      if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
        core->SetFatal(e.msg);
        break;
      }
      // Otherwise a stale notification: the JS thread changed the state (by submitting a
      // command) between nbd_aio_get_direction and now. libnbd rejects the event with
      // EINVAL and leaves the state alone; the next round polls the right direction.
    }
  }
}

// libnbd callbacks (run on the I/O thread, or wherever libnbd retires the command). They
// must not call libnbd on the same handle.
int OnComplete(void* user_data, int* error) {
  Req* r = static_cast<Req*>(user_data);
  r->completed = true;
  r->error = *error;
  return 1;  // auto-retire
}

void OnFree(void* user_data) {
  Req* r = static_cast<Req*>(user_data);
  if (r == tlSubmitting) {
    r->freedInSubmit = true;
    return;
  }
  r->core->Post(r);
}

int OnExtent(void* user_data, const char* metacontext, uint64_t /*offset*/, uint32_t* entries,
             size_t nr_entries, int* /*error*/) {
  Req* r = static_cast<Req*>(user_data);
  std::vector<uint32_t>* dst = nullptr;
  for (auto& e : r->extents) {
    if (e.first == metacontext) {
      dst = &e.second;
      break;
    }
  }
  if (dst == nullptr) {
    r->extents.emplace_back(metacontext, std::vector<uint32_t>());
    dst = &r->extents.back().second;
  }
  dst->insert(dst->end(), entries, entries + nr_entries);
  return 0;
}

// ---------------------------------------------------------------------------------------
// The JS class

uint64_t ToU64(Napi::Env env, const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != std::floor(d))
    throw Napi::RangeError::New(env, std::string(name) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(d);
}

uint32_t ToFlags(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return 0;
  if (!v.IsNumber()) throw Napi::TypeError::New(env, "flags must be a number");
  return v.As<Napi::Number>().Uint32Value();
}

Napi::Uint8Array ToBytes(Napi::Env env, const Napi::Value& v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(env, "buffer must be a Buffer or Uint8Array");
  return v.As<Napi::Uint8Array>();
}

class NbdHandle : public Napi::ObjectWrap<NbdHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NbdHandle(const Napi::CallbackInfo& info);
  ~NbdHandle() override;

  // JS thread: settles a request that was in flight.
  void Settle(Napi::Env env, Req* r);
  void ConnectDone(Napi::Env env, Napi::Promise::Deferred& d, const LibnbdError* err);
  void CloseDone(Napi::Env env, const LibnbdError* err);

 private:
  enum class State { Created, Connecting, Connected, Failed, Closing, Closed };

  Napi::Value Connect(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Pread(const Napi::CallbackInfo& info);
  Napi::Value Pwrite(const Napi::CallbackInfo& info);
  Napi::Value Zero(const Napi::CallbackInfo& info);
  Napi::Value Trim(const Napi::CallbackInfo& info);
  Napi::Value Flush(const Napi::CallbackInfo& info);
  Napi::Value BlockStatus(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value CanMetaContext(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value IsConnected(const Napi::CallbackInfo& info);

  void RequireConnected(Napi::Env env);
  Req* NewReq(Napi::Env env, Op op, uint64_t offset, uint64_t length, napi_value* promise);
  Napi::Value Submitted(Napi::Env env, Req* r, int64_t cookie, napi_value promise);
  static void Reject(Napi::Env env, Req* r, const std::string& msg, int err);

  nbd_handle* h_ = nullptr;
  State state_ = State::Created;
  std::shared_ptr<Core> core_;
  std::vector<Napi::Promise::Deferred> closeWaiters_;
  LibnbdError closeError_;
  bool closeFailed_ = false;
  uint32_t inflight_ = 0;
  uint32_t maxInflight_ = 0;
  double completed_ = 0;
};

void CallJs(Napi::Env env, Napi::Function, Core*, Req* r) {
  if (r == nullptr) return;
  if (env == nullptr) {  // environment teardown: nothing to settle, owner may be gone
    delete r;
    return;
  }
  try {
    Napi::HandleScope scope(env);
    r->owner->Settle(env, r);
  } catch (...) {
    // Settle does not throw in practice; never let an exception unwind into Node.
  }
  delete r;
}

Napi::Function NbdHandle::Define(Napi::Env env) {
  return DefineClass(env, "NBD",
                     {
                         InstanceMethod<&NbdHandle::Connect>("connect"),
                         InstanceMethod<&NbdHandle::Close>("close"),
                         InstanceMethod<&NbdHandle::Pread>("pread"),
                         InstanceMethod<&NbdHandle::Pwrite>("pwrite"),
                         InstanceMethod<&NbdHandle::Zero>("zero"),
                         InstanceMethod<&NbdHandle::Trim>("trim"),
                         InstanceMethod<&NbdHandle::Flush>("flush"),
                         InstanceMethod<&NbdHandle::BlockStatus>("blockStatus"),
                         InstanceMethod<&NbdHandle::Info>("info"),
                         InstanceMethod<&NbdHandle::CanMetaContext>("canMetaContext"),
                         InstanceMethod<&NbdHandle::Stats>("stats"),
                         InstanceMethod<&NbdHandle::IsConnected>("isConnected"),
                     });
}

NbdHandle::NbdHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NbdHandle>(info) {
  Napi::Env env = info.Env();
  h_ = nbd_create();
  if (h_ == nullptr) {
    LibnbdError e = LastError("nbd_create");
    throw MakeError(env, e.msg, e.err);
  }
  core_ = std::make_shared<Core>();
  auto* holder = new std::shared_ptr<Core>(core_);
  core_->tsfn = Tsfn::New(
      env, "virtnbd:nbd", 0 /* unlimited queue: posting never blocks */, 1, core_.get(),
      [](Napi::Env, std::shared_ptr<Core>* data, Core*) {
        // Runs on the JS thread once the function is released, or at environment teardown
        // (then before our destructor): make sure no thread posts any more.
        Core* c = data->get();
        {
          std::lock_guard<std::mutex> l(c->tsfnMu);
          c->tsfnGone = true;
        }
        c->StopIo();
        delete data;
      },
      holder);
  core_->tsfn.Unref(env);  // only keep the loop alive while requests are in flight
}

NbdHandle::~NbdHandle() {
  // Garbage collected (never while a request is in flight or a worker runs: those hold a
  // strong reference) or environment teardown.
  core_->StopIo();
  if (h_ != nullptr) {
    nbd_close(h_);
    h_ = nullptr;
  }
  if (!core_->tsfnReleased) {
    std::lock_guard<std::mutex> l(core_->tsfnMu);
    if (!core_->tsfnGone) core_->tsfn.Release();
    core_->tsfnReleased = true;
  }
}

void NbdHandle::RequireConnected(Napi::Env env) {
  if (state_ == State::Connected && h_ != nullptr) return;
  const char* why = state_ == State::Created      ? "NBD handle is not connected yet"
                    : state_ == State::Connecting ? "NBD handle is still connecting"
                    : state_ == State::Failed     ? "NBD connection failed"
                                                  : "NBD handle is closed";
  throw MakeError(env, why, ENOTCONN);
}

// ---- connect ---------------------------------------------------------------------------

class ConnectWorker : public Napi::AsyncWorker {
 public:
  ConnectWorker(Napi::Env env, NbdHandle* owner, nbd_handle* h, std::string target, bool isUri)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        h_(h),
        target_(std::move(target)),
        isUri_(isUri) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    const int rc = isUri_ ? nbd_connect_uri(h_, target_.c_str())
                          : nbd_connect_unix(h_, target_.c_str());
    if (rc == -1) {
      failed_ = true;
      err_ = LastError("connect");
    }
  }

  void OnOK() override { owner_->ConnectDone(Env(), deferred_, failed_ ? &err_ : nullptr); }

 private:
  Napi::Promise::Deferred deferred_;
  NbdHandle* owner_;
  nbd_handle* h_;
  std::string target_;
  bool isUri_;
  bool failed_ = false;
  LibnbdError err_;
};

// connect(target: string, opts?: {metaContexts?, exportName?, tls?, tlsCertificates?, debug?,
//                                 initializeReadBuffers?})
// target is an NBD URI (nbd://, nbd+unix://, nbds://, ...) or a unix socket path.
Napi::Value NbdHandle::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_ != State::Created)
    throw MakeError(env, "connect: this handle was already used; create a new one", EINVAL);
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "connect: target must be a string");
  const std::string target = info[0].As<Napi::String>().Utf8Value();
  const bool isUri = target.find("://") != std::string::npos;
  Napi::Object opts = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

  auto check = [&](int rc, const char* what) {
    if (rc == -1) {
      LibnbdError e = LastError(what);
      throw MakeError(env, e.msg, e.err);
    }
  };
  if (opts.Has("debug") && opts.Get("debug").ToBoolean()) check(nbd_set_debug(h_, true), "debug");
  // libnbd zeroes every read buffer before use unless told not to; that memset runs on the JS
  // thread and costs a third of the throughput of large reads (1.1 vs 1.75 GB/s measured).
  // Skipping it is safe here: a failed read rejects and its buffer is not handed out by the
  // client, and a successful one is covered by the server's data (the server is trusted).
  check(nbd_set_pread_initialize(h_, opts.Get("initializeReadBuffers").ToBoolean()),
        "pread_initialize");
  Napi::Value mc = opts.Get("metaContexts");
  if (!mc.IsUndefined() && !mc.IsNull()) {
    if (!mc.IsArray()) throw Napi::TypeError::New(env, "connect: metaContexts must be an array");
    Napi::Array arr = mc.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) throw Napi::TypeError::New(env, "connect: metaContexts must be strings");
      check(nbd_add_meta_context(h_, v.As<Napi::String>().Utf8Value().c_str()),
            "add_meta_context");
    }
  }
  Napi::Value en = opts.Get("exportName");
  if (!en.IsUndefined() && !en.IsNull()) {
    if (!en.IsString()) throw Napi::TypeError::New(env, "connect: exportName must be a string");
    if (isUri)
      throw Napi::TypeError::New(env, "connect: put the export name into the URI's path");
    check(nbd_set_export_name(h_, en.As<Napi::String>().Utf8Value().c_str()), "export_name");
  }
  Napi::Value tls = opts.Get("tls");
  if (!tls.IsUndefined() && !tls.IsNull()) {
    const std::string t = tls.ToString().Utf8Value();
    int mode = t == "disable" ? LIBNBD_TLS_DISABLE
               : t == "allow" ? LIBNBD_TLS_ALLOW
               : t == "require" ? LIBNBD_TLS_REQUIRE
                                : -1;
    if (mode < 0) throw Napi::TypeError::New(env, "connect: tls must be disable|allow|require");
    check(nbd_set_tls(h_, mode), "set_tls");
  }
  Napi::Value certs = opts.Get("tlsCertificates");
  if (!certs.IsUndefined() && !certs.IsNull())
    check(nbd_set_tls_certificates(h_, certs.ToString().Utf8Value().c_str()), "tls_certificates");

  if (core_->efd < 0) {
    core_->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (core_->efd < 0) throw MakeError(env, "eventfd: " + StrError(errno), errno);
  }

  auto* w = new ConnectWorker(env, this, h_, target, isUri);
  Napi::Promise p = w->Promise();
  state_ = State::Connecting;
  Ref();  // alive until the worker is done
  w->Queue();
  return p;
}

void NbdHandle::ConnectDone(Napi::Env env, Napi::Promise::Deferred& d, const LibnbdError* err) {
  Unref();
  if (state_ != State::Connecting) {  // cannot happen: close() refuses while connecting
    d.Reject(MakeError(env, "connect: handle state changed during connect", EINVAL).Value());
    return;
  }
  if (err != nullptr) {
    state_ = State::Failed;
    d.Reject(MakeError(env, err->msg, err->err).Value());
    return;
  }
  try {
    std::lock_guard<std::mutex> l(core_->ioMu);
    core_->io = std::thread(Core::IoLoop, h_, core_.get());
  } catch (const std::system_error& e) {
    state_ = State::Failed;
    d.Reject(MakeError(env, std::string("cannot start NBD I/O thread: ") + e.what(),
                       e.code().value())
                 .Value());
    return;
  }
  state_ = State::Connected;
  d.Resolve(env.Undefined());
}

// ---- close -----------------------------------------------------------------------------

class CloseWorker : public Napi::AsyncWorker {
 public:
  CloseWorker(Napi::Env env, NbdHandle* owner, std::shared_ptr<Core> core, nbd_handle* h,
              bool graceful)
      : Napi::AsyncWorker(env), owner_(owner), core_(std::move(core)), h_(h), graceful_(graceful) {}

  void Execute() override {
    core_->StopIo();  // from here on this thread alone drives the handle
    if (h_ == nullptr) return;
    if (graceful_) {
      // Let the commands in flight finish first (their callbacks run on this thread):
      // nbd_shutdown would send NBD_CMD_DISC right behind them, and qemu-nbd drops the
      // connection on DISC without answering what it has not answered yet.
      while (nbd_aio_in_flight(h_) > 0 && !nbd_aio_is_dead(h_) && !nbd_aio_is_closed(h_)) {
        if (nbd_poll(h_, -1) == -1) break;
      }
      // Then NBD_CMD_DISC, and wait for the server to close.
      if (nbd_shutdown(h_, 0) == -1) {
        failed_ = true;
        err_ = LastError("shutdown");
      }
    }
    nbd_close(h_);  // frees the callbacks of anything still queued: those requests reject
    h_ = nullptr;
  }

  void OnOK() override { owner_->CloseDone(Env(), failed_ ? &err_ : nullptr); }

 private:
  NbdHandle* owner_;
  std::shared_ptr<Core> core_;
  nbd_handle* h_;
  bool graceful_;
  bool failed_ = false;
  LibnbdError err_;
};

// close(graceful: boolean): graceful waits for the requests in flight and disconnects
// cleanly (rejects if that fails, the handle is released anyway); otherwise the socket is
// simply closed and requests still in flight reject. Idempotent.
Napi::Value NbdHandle::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool graceful = info[0].ToBoolean();
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  switch (state_) {
    case State::Closed:
      d.Resolve(env.Undefined());
      return d.Promise();
    case State::Closing:
      closeWaiters_.push_back(d);
      return d.Promise();
    case State::Connecting:
      d.Reject(MakeError(env, "close: connect is still in progress", EBUSY).Value());
      return d.Promise();
    default:
      break;
  }
  const bool wasConnected = state_ == State::Connected;
  nbd_handle* h = h_;
  h_ = nullptr;
  state_ = State::Closing;
  closeWaiters_.push_back(d);
  Ref();
  (new CloseWorker(env, this, core_, h, graceful && wasConnected))->Queue();
  return d.Promise();
}

void NbdHandle::CloseDone(Napi::Env env, const LibnbdError* err) {
  state_ = State::Closed;
  {
    std::lock_guard<std::mutex> l(core_->tsfnMu);
    if (!core_->tsfnReleased && !core_->tsfnGone) core_->tsfn.Release();
    core_->tsfnReleased = true;
  }
  std::vector<Napi::Promise::Deferred> waiters;
  waiters.swap(closeWaiters_);
  for (auto& w : waiters) {
    if (err != nullptr)
      w.Reject(MakeError(env, err->msg, err->err).Value());
    else
      w.Resolve(env.Undefined());
  }
  Unref();
}

// ---- commands --------------------------------------------------------------------------

Req* NbdHandle::NewReq(Napi::Env env, Op op, uint64_t offset, uint64_t length,
                       napi_value* promise) {
  auto* r = new Req();
  r->owner = this;
  r->core = core_.get();
  r->op = op;
  r->offset = offset;
  r->length = length;
  napi_status s = napi_create_promise(env, &r->deferred, promise);
  if (s != napi_ok) {
    delete r;
    NAPI_THROW(Napi::Error::New(env, "cannot create promise"), nullptr);
  }
  return r;
}

void NbdHandle::Reject(Napi::Env env, Req* r, const std::string& msg, int err) {
  napi_reject_deferred(env, r->deferred, MakeError(env, msg, err).Value());
  r->deferred = nullptr;
  if (r->buf != nullptr) {
    napi_delete_reference(env, r->buf);
    r->buf = nullptr;
  }
}

// Common tail of every submission. `cookie` is the nbd_aio_* result, called right after it
// so that libnbd's thread-local error is still ours.
Napi::Value NbdHandle::Submitted(Napi::Env env, Req* r, int64_t cookie, napi_value promise) {
  if (cookie == -1) {
    LibnbdError e = LastError(OpName(r->op));
    // libnbd already freed the callbacks (r->freedInSubmit), the command does not exist.
    Reject(env, r, e.msg, e.err);
    delete r;
    return Napi::Value(env, promise);
  }
  if (inflight_++ == 0) {
    core_->tsfn.Ref(env);
    Ref();
  }
  if (inflight_ > maxInflight_) maxInflight_ = inflight_;
  if (r->freedInSubmit) {
    // Queued, but the connection died while sending it and libnbd retired it already.
    Settle(env, r);
    delete r;
  } else if (nbd_aio_get_direction(h_) & LIBNBD_AIO_DIRECTION_WRITE) {
    // The request could not be written in full: the I/O thread must poll for POLLOUT too.
    core_->Wake();
  }
  return Napi::Value(env, promise);
}

void NbdHandle::Settle(Napi::Env env, Req* r) {
  if (r->completed && r->error == 0) {
    napi_value result = env.Undefined();
    if (r->op == Op::Pread && r->buf != nullptr) {
      napi_get_reference_value(env, r->buf, &result);
    } else if (r->op == Op::BlockStatus) {
      Napi::Object o = Napi::Object::New(env);
      for (auto& e : r->extents) {
        Napi::Uint32Array a = Napi::Uint32Array::New(env, e.second.size());
        if (!e.second.empty()) memcpy(a.Data(), e.second.data(), e.second.size() * 4);
        o.Set(e.first, a);
      }
      result = o;
    }
    napi_resolve_deferred(env, r->deferred, result);
    r->deferred = nullptr;
    if (r->buf != nullptr) {
      napi_delete_reference(env, r->buf);
      r->buf = nullptr;
    }
  } else {
    int err = r->completed ? r->error : ENOTCONN;
    if (err == 0) err = EIO;
    char where[96];
    snprintf(where, sizeof where, " (offset %" PRIu64 ", length %" PRIu64 ")", r->offset,
             r->length);
    std::string msg = std::string(OpName(r->op)) + ": " + StrError(err) +
                      (r->op == Op::Flush ? std::string() : std::string(where));
    const std::string fatal = core_->Fatal();
    if (!fatal.empty())
      msg += ": connection lost: " + fatal;
    else if (!r->completed)
      msg += ": NBD handle closed";
    Reject(env, r, msg, err);
  }
  completed_ += 1;
  if (--inflight_ == 0) {
    if (!core_->tsfnReleased && !core_->tsfnGone) core_->tsfn.Unref(env);
    Unref();
  }
}

nbd_completion_callback Completion(Req* r) {
  nbd_completion_callback cb;
  cb.callback = OnComplete;
  cb.user_data = r;
  cb.free = OnFree;
  return cb;
}

// pread(buf: Uint8Array, offset: number, flags?: number): Promise<Uint8Array> (the same buf)
Napi::Value NbdHandle::Pread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array buf = ToBytes(env, info[0]);
  const uint64_t offset = ToU64(env, info[1], "offset");
  const uint32_t flags = ToFlags(env, info[2]);
  RequireConnected(env);
  napi_value promise;
  Req* r = NewReq(env, Op::Pread, offset, buf.ByteLength(), &promise);
  napi_create_reference(env, buf, 1, &r->buf);
  tlSubmitting = r;
  const int64_t c = nbd_aio_pread(h_, buf.Data(), buf.ByteLength(), offset, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// pwrite(buf: Uint8Array, offset: number, flags?: number): Promise<void>
Napi::Value NbdHandle::Pwrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array buf = ToBytes(env, info[0]);
  const uint64_t offset = ToU64(env, info[1], "offset");
  const uint32_t flags = ToFlags(env, info[2]);
  RequireConnected(env);
  napi_value promise;
  Req* r = NewReq(env, Op::Pwrite, offset, buf.ByteLength(), &promise);
  napi_create_reference(env, buf, 1, &r->buf);
  tlSubmitting = r;
  const int64_t c =
      nbd_aio_pwrite(h_, buf.Data(), buf.ByteLength(), offset, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// zero(length: number, offset: number, flags?: number): Promise<void>
Napi::Value NbdHandle::Zero(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t length = ToU64(env, info[0], "length");
  const uint64_t offset = ToU64(env, info[1], "offset");
  const uint32_t flags = ToFlags(env, info[2]);
  RequireConnected(env);
  napi_value promise;
  Req* r = NewReq(env, Op::Zero, offset, length, &promise);
  tlSubmitting = r;
  const int64_t c = nbd_aio_zero(h_, length, offset, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// trim(length: number, offset: number, flags?: number): Promise<void>
Napi::Value NbdHandle::Trim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint64_t length = ToU64(env, info[0], "length");
  const uint64_t offset = ToU64(env, info[1], "offset");
  const uint32_t flags = ToFlags(env, info[2]);
  RequireConnected(env);
  napi_value promise;
  Req* r = NewReq(env, Op::Trim, offset, length, &promise);
  tlSubmitting = r;
  const int64_t c = nbd_aio_trim(h_, length, offset, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// flush(flags?: number): Promise<void>
Napi::Value NbdHandle::Flush(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t flags = ToFlags(env, info[0]);
  RequireConnected(env);
  napi_value promise;
  Req* r = NewReq(env, Op::Flush, 0, 0, &promise);
  tlSubmitting = r;
  const int64_t c = nbd_aio_flush(h_, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// blockStatus(length: number, offset: number, flags?: number):
//   Promise<{[context: string]: Uint32Array /* length, flags, length, flags, ... */}>
// One NBD_CMD_BLOCK_STATUS: the length is capped at 2 GiB (the request field is 32 bits)
// and the server may describe less than asked; callers loop (src/nbd/client.ts does).
Napi::Value NbdHandle::BlockStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t length = ToU64(env, info[0], "length");
  const uint64_t offset = ToU64(env, info[1], "offset");
  const uint32_t flags = ToFlags(env, info[2]);
  RequireConnected(env);
  const uint64_t kMax = UINT64_C(1) << 31;  // aligned to any block size a server may need
  if (length > kMax) length = kMax;
  napi_value promise;
  Req* r = NewReq(env, Op::BlockStatus, offset, length, &promise);
  nbd_extent_callback ecb;
  ecb.callback = OnExtent;
  ecb.user_data = r;
  ecb.free = nullptr;  // the completion's .free owns r
  tlSubmitting = r;
  const int64_t c = nbd_aio_block_status(h_, length, offset, ecb, Completion(r), flags);
  tlSubmitting = nullptr;
  return Submitted(env, r, c, promise);
}

// ---- information -----------------------------------------------------------------------

Napi::Value NbdHandle::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireConnected(env);
  const int64_t size = nbd_get_size(h_);
  if (size < 0) {
    LibnbdError e = LastError("get_size");
    throw MakeError(env, e.msg, e.err);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  auto flag = [&](const char* name, int v) { o.Set(name, Napi::Boolean::New(env, v > 0)); };
  flag("readOnly", nbd_is_read_only(h_));
  flag("canFlush", nbd_can_flush(h_));
  flag("canFua", nbd_can_fua(h_));
  flag("canTrim", nbd_can_trim(h_));
  flag("canZero", nbd_can_zero(h_));
  flag("canFastZero", nbd_can_fast_zero(h_));
  flag("canDf", nbd_can_df(h_));
  flag("canMultiConn", nbd_can_multi_conn(h_));
  flag("canCache", nbd_can_cache(h_));
  flag("structuredReplies", nbd_get_structured_replies_negotiated(h_));
  const char* proto = nbd_get_protocol(h_);
  o.Set("protocol", proto != nullptr ? Napi::Value(Napi::String::New(env, proto)) : env.Null());
  char* name = nbd_get_export_name(h_);
  o.Set("exportName", name != nullptr ? Napi::Value(Napi::String::New(env, name)) : env.Null());
  free(name);
  const int64_t mn = nbd_get_block_size(h_, LIBNBD_SIZE_MINIMUM);
  const int64_t pr = nbd_get_block_size(h_, LIBNBD_SIZE_PREFERRED);
  const int64_t mx = nbd_get_block_size(h_, LIBNBD_SIZE_MAXIMUM);
  if (mn > 0 || pr > 0 || mx > 0) {
    Napi::Object bs = Napi::Object::New(env);
    bs.Set("minimum", Napi::Number::New(env, static_cast<double>(mn > 0 ? mn : 0)));
    bs.Set("preferred", Napi::Number::New(env, static_cast<double>(pr > 0 ? pr : 0)));
    bs.Set("maximum", Napi::Number::New(env, static_cast<double>(mx > 0 ? mx : 0)));
    o.Set("blockSize", bs);
  } else {
    o.Set("blockSize", env.Null());
  }
  const char* version = nbd_get_version(h_);
  o.Set("libnbdVersion", Napi::String::New(env, version != nullptr ? version : ""));
  return o;
}

Napi::Value NbdHandle::CanMetaContext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "canMetaContext: name must be a string");
  RequireConnected(env);
  const int r = nbd_can_meta_context(h_, info[0].As<Napi::String>().Utf8Value().c_str());
  if (r < 0) {
    LibnbdError e = LastError("can_meta_context");
    throw MakeError(env, e.msg, e.err);
  }
  return Napi::Boolean::New(env, r > 0);
}

// stats(reset?: boolean): {inFlight, maxInFlight, completed}
Napi::Value NbdHandle::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("inFlight", Napi::Number::New(env, inflight_));
  o.Set("maxInFlight", Napi::Number::New(env, maxInflight_));
  o.Set("completed", Napi::Number::New(env, completed_));
  if (info[0].ToBoolean()) {
    maxInflight_ = inflight_;
    completed_ = 0;
  }
  return o;
}

Napi::Value NbdHandle::IsConnected(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_ != State::Connected || h_ == nullptr) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, nbd_aio_is_dead(h_) == 0 && nbd_aio_is_closed(h_) == 0);
}

}  // namespace

void InitNbd(Napi::Env env, Napi::Object exports) {
  exports.Set("NBD", NbdHandle::Define(env));
  Napi::Object c = Napi::Object::New(env);
  c.Set("CMD_FLAG_FUA", Napi::Number::New(env, LIBNBD_CMD_FLAG_FUA));
  c.Set("CMD_FLAG_NO_HOLE", Napi::Number::New(env, LIBNBD_CMD_FLAG_NO_HOLE));
  c.Set("CMD_FLAG_DF", Napi::Number::New(env, LIBNBD_CMD_FLAG_DF));
  c.Set("CMD_FLAG_REQ_ONE", Napi::Number::New(env, LIBNBD_CMD_FLAG_REQ_ONE));
  c.Set("CMD_FLAG_FAST_ZERO", Napi::Number::New(env, LIBNBD_CMD_FLAG_FAST_ZERO));
  c.Set("STATE_HOLE", Napi::Number::New(env, LIBNBD_STATE_HOLE));
  c.Set("STATE_ZERO", Napi::Number::New(env, LIBNBD_STATE_ZERO));
  c.Set("CONTEXT_BASE_ALLOCATION", Napi::String::New(env, LIBNBD_CONTEXT_BASE_ALLOCATION));
  exports.Set("nbdConstants", c);
}

}  // namespace virtnbd
