// flock(2) on a path, for "one backup per target directory at a time" (BEHAVIOUR.md §2.7).
// Node has no flock; a lock file would leave an extra file in the backup directory, and an
// O_EXCL pid file survives a SIGKILL. flock on the directory itself is released by the kernel
// when the process dies, whatever the way.
//
//   lockPath(path) -> fd      LOCK_EX | LOCK_NB on open(path, O_RDONLY | O_CLOEXEC); throws an
//                             Error with `code` ('EWOULDBLOCK' when another process holds it,
//                             else the errno name) and `errno`.
//   unlockFd(fd)              closes the descriptor (which releases the lock).
#include "fslock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <string>

namespace virtnbd {
namespace {

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  const char* code = err == EWOULDBLOCK ? "EWOULDBLOCK" : err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : "EIO";
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Value LockPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw Napi::TypeError::New(env, "lockPath(path: string)");
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, "open " + path, errno);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "flock " + path, err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UnlockFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "unlockFd(fd: number)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::RangeError::New(env, "unlockFd: negative descriptor");
  if (close(fd) != 0) throw ErrnoError(env, "close", errno);
  return env.Undefined();
}

}  // namespace

void InitFsLock(Napi::Env env, Napi::Object exports) {
  exports.Set("lockPath", Napi::Function::New(env, LockPath, "lockPath"));
  exports.Set("unlockFd", Napi::Function::New(env, UnlockFd, "unlockFd"));
}

}  // namespace virtnbd
