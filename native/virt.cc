// libvirt binding (libvirt >= 9.0 API, plus libvirt-qemu for the monitor command).
//
// Threading (see native/README.md):
//  * Every call that may talk to libvirtd runs on the libuv thread pool (one Napi::AsyncWorker
//    per call) and returns a Promise. Purely local accessors (name, UUID, isAlive) are sync.
//  * libvirt objects are thread-safe and reference counted. JS objects own one reference
//    each through a std::shared_ptr whose deleter calls virConnectClose / virDomainFree /
//    virDomainCheckpointFree; every worker holds its own copy, so a handle stays valid while
//    a call is running even if its JS object is collected. A domain or checkpoint keeps its
//    connection alive (libvirt's own reference from virDomain to virConnect).
//  * Errors: libvirt keeps the last error per thread, so the worker copies it
//    (virGetLastError) right after the failing call, on the same thread. The JS thread turns
//    it into an Error with libvirt's message, `code` (virErrorNumber) and `domain`
//    (virErrorDomain). A no-op error function keeps libvirt from printing to stderr.
#include "virt.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdlib.h>
#include <string.h>

#include <exception>
#include <functional>
#include <memory>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace virtnbd {
namespace {

// ---------------------------------------------------------------------------------------
// Errors

struct VirtErr {
  int code = 0;    // virErrorNumber
  int domain = 0;  // virErrorDomain
  std::string msg;
};

// Must be called on the thread where the libvirt call failed.
[[noreturn]] void ThrowLast(const char* what) {
  VirtErr e;
  virErrorPtr le = virGetLastError();
  if (le != nullptr && le->code != VIR_ERR_OK) {
    e.code = le->code;
    e.domain = le->domain;
    e.msg = le->message != nullptr ? le->message : std::string(what) + " failed";
  } else {
    e.code = VIR_ERR_INTERNAL_ERROR;
    e.msg = std::string(what) + " failed (libvirt reported no error)";
  }
  virResetLastError();
  throw e;
}

Napi::Error MakeError(Napi::Env env, const VirtErr& err) {
  Napi::Error e = Napi::Error::New(env, err.msg);
  e.Set("code", Napi::Number::New(env, err.code));
  e.Set("domain", Napi::Number::New(env, err.domain));
  return e;
}

void NoopErrorFunc(void*, virErrorPtr) {}

std::string TakeString(char* s) {  // takes ownership of a malloc'ed libvirt string
  std::string r(s != nullptr ? s : "");
  free(s);
  return r;
}

// ---------------------------------------------------------------------------------------
// Handles

using ConnP = std::shared_ptr<virConnect>;
using DomP = std::shared_ptr<virDomain>;
using CkP = std::shared_ptr<virDomainCheckpoint>;

ConnP WrapConn(virConnectPtr c) {
  return ConnP(c, [](virConnectPtr p) { virConnectClose(p); });
}
DomP WrapDom(virDomainPtr d) {
  return DomP(d, [](virDomainPtr p) { virDomainFree(p); });
}
CkP WrapCk(virDomainCheckpointPtr c) {
  return CkP(c, [](virDomainCheckpointPtr p) { virDomainCheckpointFree(p); });
}

// Constructors of the wrapped classes, per environment (each env runs on one thread).
struct Ctors {
  Napi::FunctionReference conn, dom, ck;
};
thread_local Ctors* tlCtors = nullptr;

template <typename P>
Napi::Value NewWrapped(Napi::Env env, Napi::FunctionReference& ctor, P handle) {
  auto ext = Napi::External<P>::New(env, new P(std::move(handle)), [](Napi::Env, P* p) { delete p; });
  return ctor.New({ext});
}

// Takes the handle out of the External the native code passes to a constructor.
template <typename P>
P TakeHandle(const Napi::CallbackInfo& info, const char* cls) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), std::string(cls) + " objects are created by the native code only");
  }
  P* p = info[0].As<Napi::External<P>>().Data();
  P h = std::move(*p);
  return h;
}

// ---------------------------------------------------------------------------------------
// Typed parameters (job stats, guest info), copied on the worker thread

struct Param {
  std::string name;
  int type = 0;
  double num = 0;
  bool b = false;
  std::string s;
};

std::vector<Param> CopyParams(virTypedParameterPtr p, int n) {
  std::vector<Param> out;
  out.reserve(n > 0 ? n : 0);
  for (int i = 0; i < n; i++) {
    Param q;
    q.name = p[i].field;
    q.type = p[i].type;
    switch (p[i].type) {
      case VIR_TYPED_PARAM_INT: q.num = p[i].value.i; break;
      case VIR_TYPED_PARAM_UINT: q.num = p[i].value.ui; break;
      case VIR_TYPED_PARAM_LLONG: q.num = static_cast<double>(p[i].value.l); break;
      case VIR_TYPED_PARAM_ULLONG: q.num = static_cast<double>(p[i].value.ul); break;
      case VIR_TYPED_PARAM_DOUBLE: q.num = p[i].value.d; break;
      case VIR_TYPED_PARAM_BOOLEAN: q.b = p[i].value.b != 0; break;
      case VIR_TYPED_PARAM_STRING: q.s = p[i].value.s != nullptr ? p[i].value.s : ""; break;
      default: continue;
    }
    out.push_back(std::move(q));
  }
  return out;
}

// Numbers (64-bit values above 2^53 lose precision), booleans and strings by field name.
Napi::Object ParamsToObject(Napi::Env env, const std::vector<Param>& ps) {
  Napi::Object o = Napi::Object::New(env);
  for (const Param& p : ps) {
    if (p.type == VIR_TYPED_PARAM_BOOLEAN) o.Set(p.name, Napi::Boolean::New(env, p.b));
    else if (p.type == VIR_TYPED_PARAM_STRING) o.Set(p.name, Napi::String::New(env, p.s));
    else o.Set(p.name, Napi::Number::New(env, p.num));
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// One blocking call on the thread pool

// Runs on the JS thread after the work succeeded and builds the promise's value.
using Build = std::function<Napi::Value(Napi::Env)>;
using Work = std::function<Build()>;

class Job : public Napi::AsyncWorker {
 public:
  static Napi::Promise Run(Napi::Env env, const char* name, Work work) {
    auto* j = new Job(env, name, std::move(work));
    Napi::Promise p = j->d_.Promise();
    j->Queue();
    return p;
  }

 protected:
  void Execute() override {
    virResetLastError();
    try {
      build_ = work_();
    } catch (VirtErr& e) {
      err_ = std::move(e);
      failed_ = true;
    } catch (const std::exception& e) {
      err_.code = VIR_ERR_INTERNAL_ERROR;
      err_.msg = e.what();
      failed_ = true;
    }
    work_ = nullptr;  // drop the handles the work captured here, off the JS thread
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failed_) {
      d_.Reject(MakeError(env, err_).Value());
      return;
    }
    try {
      d_.Resolve(build_ ? build_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      d_.Reject(e.Value());
    }
    build_ = nullptr;
  }

  void OnError(const Napi::Error& e) override { d_.Reject(e.Value()); }

 private:
  Job(Napi::Env env, const char* name, Work work)
      : Napi::AsyncWorker(env, name), d_(Napi::Promise::Deferred::New(env)), work_(std::move(work)) {}

  Napi::Promise::Deferred d_;
  Work work_;
  Build build_;
  VirtErr err_;
  bool failed_ = false;
};

Build Undef() {
  return [](Napi::Env env) -> Napi::Value { return env.Undefined(); };
}
Build Num(double v) {
  return [v](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, v); };
}
Build Bool(bool v) {
  return [v](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, v); };
}
Build Str(std::string s) {
  return [s = std::move(s)](Napi::Env env) -> Napi::Value { return Napi::String::New(env, s); };
}

// ---------------------------------------------------------------------------------------
// Arguments

std::string StrArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

// Optional string: undefined/null → not set.
bool OptStrArg(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return false;
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string or null");
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

unsigned int FlagsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "flags must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 4294967295.0) || v != static_cast<double>(static_cast<uint32_t>(v))) {
    throw Napi::RangeError::New(info.Env(), "flags must be an unsigned 32-bit integer");
  }
  return static_cast<unsigned int>(v);
}

std::vector<std::string> StrArrayArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  std::vector<std::string> out;
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return out;
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
  Napi::Array a = info[i].As<Napi::Array>();
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Checkpoint

class VirtCheckpoint : public Napi::ObjectWrap<VirtCheckpoint> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "VirtCheckpoint",
                       {
                           InstanceMethod<&VirtCheckpoint::GetName>("getName"),
                           InstanceMethod<&VirtCheckpoint::GetXMLDesc>("getXMLDesc"),
                           InstanceMethod<&VirtCheckpoint::Delete>("delete"),
                       });
  }

  explicit VirtCheckpoint(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtCheckpoint>(info) {
    ck_ = TakeHandle<CkP>(info, "VirtCheckpoint");
  }

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info) {
    const char* n = virDomainCheckpointGetName(ck_.get());  // local, no RPC
    return Napi::String::New(info.Env(), n != nullptr ? n : "");
  }

  // getXMLDesc(flags?): Promise<string>
  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    CkP ck = ck_;
    return Job::Run(info.Env(), "virDomainCheckpointGetXMLDesc", [ck, flags]() {
      char* x = virDomainCheckpointGetXMLDesc(ck.get(), flags);
      if (x == nullptr) ThrowLast("virDomainCheckpointGetXMLDesc");
      return Str(TakeString(x));
    });
  }

  // delete(flags?): Promise<void>
  Napi::Value Delete(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    CkP ck = ck_;
    return Job::Run(info.Env(), "virDomainCheckpointDelete", [ck, flags]() {
      if (virDomainCheckpointDelete(ck.get(), flags) < 0) ThrowLast("virDomainCheckpointDelete");
      return Undef();
    });
  }

  CkP ck_;
};

Build CheckpointValue(virDomainCheckpointPtr c) {
  CkP p = WrapCk(c);
  return [p](Napi::Env env) -> Napi::Value { return NewWrapped(env, tlCtors->ck, p); };
}

// ---------------------------------------------------------------------------------------
// Domain

class VirtDomain : public Napi::ObjectWrap<VirtDomain> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "VirtDomain",
                       {
                           InstanceMethod<&VirtDomain::GetName>("getName"),
                           InstanceMethod<&VirtDomain::GetUUIDString>("getUUIDString"),
                           InstanceMethod<&VirtDomain::GetState>("getState"),
                           InstanceMethod<&VirtDomain::IsActive>("isActive"),
                           InstanceMethod<&VirtDomain::GetXMLDesc>("getXMLDesc"),
                           InstanceMethod<&VirtDomain::GetAutostart>("getAutostart"),
                           InstanceMethod<&VirtDomain::SetAutostart>("setAutostart"),
                           InstanceMethod<&VirtDomain::Create>("create"),
                           InstanceMethod<&VirtDomain::Destroy>("destroy"),
                           InstanceMethod<&VirtDomain::Undefine>("undefine"),
                           InstanceMethod<&VirtDomain::Suspend>("suspend"),
                           InstanceMethod<&VirtDomain::Resume>("resume"),
                           InstanceMethod<&VirtDomain::BackupBegin>("backupBegin"),
                           InstanceMethod<&VirtDomain::BackupGetXMLDesc>("backupGetXMLDesc"),
                           InstanceMethod<&VirtDomain::AbortJob>("abortJob"),
                           InstanceMethod<&VirtDomain::GetJobStats>("getJobStats"),
                           InstanceMethod<&VirtDomain::CheckpointCreateXML>("checkpointCreateXML"),
                           InstanceMethod<&VirtDomain::ListAllCheckpoints>("listAllCheckpoints"),
                           InstanceMethod<&VirtDomain::CheckpointLookupByName>("checkpointLookupByName"),
                           InstanceMethod<&VirtDomain::FSFreeze>("fsFreeze"),
                           InstanceMethod<&VirtDomain::FSThaw>("fsThaw"),
                           InstanceMethod<&VirtDomain::GetGuestInfo>("getGuestInfo"),
                           InstanceMethod<&VirtDomain::QemuMonitorCommand>("qemuMonitorCommand"),
                           InstanceMethod<&VirtDomain::QemuAgentCommand>("qemuAgentCommand"),
                           InstanceMethod<&VirtDomain::Shutdown>("shutdown"),
                           InstanceMethod<&VirtDomain::BlockCopy>("blockCopy"),
                           InstanceMethod<&VirtDomain::GetBlockJobInfo>("getBlockJobInfo"),
                           InstanceMethod<&VirtDomain::BlockJobAbort>("blockJobAbort"),
                       });
  }

  explicit VirtDomain(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtDomain>(info) {
    dom_ = TakeHandle<DomP>(info, "VirtDomain");
  }

 private:
  // A call taking only flags (or nothing) and returning int < 0 on failure.
  template <int (*Fn)(virDomainPtr, unsigned int)>
  Napi::Value FlagsCall(const Napi::CallbackInfo& info, const char* name) {
    const unsigned int flags = FlagsArg(info, 0);
    DomP d = dom_;
    return Job::Run(info.Env(), name, [d, flags, name]() {
      if (Fn(d.get(), flags) < 0) ThrowLast(name);
      return Undef();
    });
  }
  template <int (*Fn)(virDomainPtr)>
  Napi::Value PlainCall(const Napi::CallbackInfo& info, const char* name) {
    DomP d = dom_;
    return Job::Run(info.Env(), name, [d, name]() {
      if (Fn(d.get()) < 0) ThrowLast(name);
      return Undef();
    });
  }

  Napi::Value GetName(const Napi::CallbackInfo& info) {
    const char* n = virDomainGetName(dom_.get());  // local
    return Napi::String::New(info.Env(), n != nullptr ? n : "");
  }

  Napi::Value GetUUIDString(const Napi::CallbackInfo& info) {
    char buf[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(dom_.get(), buf) < 0) {  // local
      virResetLastError();
      throw Napi::Error::New(info.Env(), "virDomainGetUUIDString failed");
    }
    return Napi::String::New(info.Env(), buf);
  }

  // getState(): Promise<{state: number, reason: number}> (virDomainState, its reason enum)
  Napi::Value GetState(const Napi::CallbackInfo& info) {
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetState", [d]() -> Build {
      int state = 0, reason = 0;
      if (virDomainGetState(d.get(), &state, &reason, 0) < 0) ThrowLast("virDomainGetState");
      return [state, reason](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", Napi::Number::New(env, state));
        o.Set("reason", Napi::Number::New(env, reason));
        return o;
      };
    });
  }

  Napi::Value IsActive(const Napi::CallbackInfo& info) {
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainIsActive", [d]() {
      const int r = virDomainIsActive(d.get());
      if (r < 0) ThrowLast("virDomainIsActive");
      return Bool(r == 1);
    });
  }

  Napi::Value GetXMLDesc(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetXMLDesc", [d, flags]() {
      char* x = virDomainGetXMLDesc(d.get(), flags);
      if (x == nullptr) ThrowLast("virDomainGetXMLDesc");
      return Str(TakeString(x));
    });
  }

  Napi::Value GetAutostart(const Napi::CallbackInfo& info) {
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetAutostart", [d]() {
      int a = 0;
      if (virDomainGetAutostart(d.get(), &a) < 0) ThrowLast("virDomainGetAutostart");
      return Bool(a != 0);
    });
  }

  // setAutostart(flag: boolean): Promise<void>
  Napi::Value SetAutostart(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "flag must be a boolean");
    const int flag = info[0].As<Napi::Boolean>().Value() ? 1 : 0;
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainSetAutostart", [d, flag]() {
      if (virDomainSetAutostart(d.get(), flag) < 0) ThrowLast("virDomainSetAutostart");
      return Undef();
    });
  }

  Napi::Value Create(const Napi::CallbackInfo& info) {
    return FlagsCall<virDomainCreateWithFlags>(info, "virDomainCreateWithFlags");
  }
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    return FlagsCall<virDomainDestroyFlags>(info, "virDomainDestroyFlags");
  }
  Napi::Value Undefine(const Napi::CallbackInfo& info) {
    return FlagsCall<virDomainUndefineFlags>(info, "virDomainUndefineFlags");
  }
  Napi::Value Shutdown(const Napi::CallbackInfo& info) {
    return FlagsCall<virDomainShutdownFlags>(info, "virDomainShutdownFlags");
  }

  // blockCopy(disk: string, destXml: string, flags?): Promise<void> (no typed parameters)
  Napi::Value BlockCopy(const Napi::CallbackInfo& info) {
    std::string disk = StrArg(info, 0, "disk");
    std::string dest = StrArg(info, 1, "destXml");
    const unsigned int flags = FlagsArg(info, 2);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainBlockCopy", [d, disk, dest, flags]() {
      if (virDomainBlockCopy(d.get(), disk.c_str(), dest.c_str(), nullptr, 0, flags) < 0) ThrowLast("virDomainBlockCopy");
      return Undef();
    });
  }

  // getBlockJobInfo(disk: string): Promise<null | {type, cur, end, bandwidth}> (null: no job)
  Napi::Value GetBlockJobInfo(const Napi::CallbackInfo& info) {
    std::string disk = StrArg(info, 0, "disk");
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetBlockJobInfo", [d, disk]() -> Build {
      virDomainBlockJobInfo ji;
      std::memset(&ji, 0, sizeof ji);
      const int r = virDomainGetBlockJobInfo(d.get(), disk.c_str(), &ji, 0);
      if (r < 0) ThrowLast("virDomainGetBlockJobInfo");
      if (r == 0) return [](Napi::Env env) -> Napi::Value { return env.Null(); };
      const int type = ji.type;
      const double cur = static_cast<double>(ji.cur), end = static_cast<double>(ji.end);
      const double bw = static_cast<double>(ji.bandwidth);
      return [type, cur, end, bw](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::Number::New(env, type));
        o.Set("cur", Napi::Number::New(env, cur));
        o.Set("end", Napi::Number::New(env, end));
        o.Set("bandwidth", Napi::Number::New(env, bw));
        return o;
      };
    });
  }

  // blockJobAbort(disk: string, flags?): Promise<void> (flags: ASYNC 1, PIVOT 2)
  Napi::Value BlockJobAbort(const Napi::CallbackInfo& info) {
    std::string disk = StrArg(info, 0, "disk");
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainBlockJobAbort", [d, disk, flags]() {
      if (virDomainBlockJobAbort(d.get(), disk.c_str(), flags) < 0) ThrowLast("virDomainBlockJobAbort");
      return Undef();
    });
  }

  Napi::Value Suspend(const Napi::CallbackInfo& info) { return PlainCall<virDomainSuspend>(info, "virDomainSuspend"); }
  Napi::Value Resume(const Napi::CallbackInfo& info) { return PlainCall<virDomainResume>(info, "virDomainResume"); }
  Napi::Value AbortJob(const Napi::CallbackInfo& info) {
    return FlagsCall<virDomainAbortJobFlags>(info, "virDomainAbortJobFlags");
  }

  // backupBegin(backupXml: string, checkpointXml: string | null, flags?): Promise<void>
  Napi::Value BackupBegin(const Napi::CallbackInfo& info) {
    std::string bxml = StrArg(info, 0, "backupXml");
    std::string cxml;
    const bool hasCk = OptStrArg(info, 1, "checkpointXml", &cxml);
    const unsigned int flags = FlagsArg(info, 2);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainBackupBegin", [d, bxml, cxml, hasCk, flags]() {
      if (virDomainBackupBegin(d.get(), bxml.c_str(), hasCk ? cxml.c_str() : nullptr, flags) < 0) {
        ThrowLast("virDomainBackupBegin");
      }
      return Undef();
    });
  }

  Napi::Value BackupGetXMLDesc(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainBackupGetXMLDesc", [d, flags]() {
      char* x = virDomainBackupGetXMLDesc(d.get(), flags);
      if (x == nullptr) ThrowLast("virDomainBackupGetXMLDesc");
      return Str(TakeString(x));
    });
  }

  // getJobStats(flags?): Promise<{type: number, stats: {[field]: number|string|boolean}}>
  Napi::Value GetJobStats(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetJobStats", [d, flags]() -> Build {
      int type = 0, n = 0;
      virTypedParameterPtr params = nullptr;
      if (virDomainGetJobStats(d.get(), &type, &params, &n, flags) < 0) ThrowLast("virDomainGetJobStats");
      std::vector<Param> ps = CopyParams(params, n);
      virTypedParamsFree(params, n);
      return [type, ps = std::move(ps)](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", Napi::Number::New(env, type));
        o.Set("stats", ParamsToObject(env, ps));
        return o;
      };
    });
  }

  // checkpointCreateXML(xml, flags?): Promise<VirtCheckpoint>
  Napi::Value CheckpointCreateXML(const Napi::CallbackInfo& info) {
    std::string xml = StrArg(info, 0, "xml");
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainCheckpointCreateXML", [d, xml, flags]() {
      virDomainCheckpointPtr c = virDomainCheckpointCreateXML(d.get(), xml.c_str(), flags);
      if (c == nullptr) ThrowLast("virDomainCheckpointCreateXML");
      return CheckpointValue(c);
    });
  }

  // listAllCheckpoints(flags?): Promise<VirtCheckpoint[]>
  Napi::Value ListAllCheckpoints(const Napi::CallbackInfo& info) {
    const unsigned int flags = FlagsArg(info, 0);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainListAllCheckpoints", [d, flags]() -> Build {
      virDomainCheckpointPtr* cks = nullptr;
      const int n = virDomainListAllCheckpoints(d.get(), &cks, flags);
      if (n < 0) ThrowLast("virDomainListAllCheckpoints");
      std::vector<CkP> v;
      for (int i = 0; i < n; i++) v.push_back(WrapCk(cks[i]));
      free(cks);
      return [v = std::move(v)](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), NewWrapped(env, tlCtors->ck, v[i]));
        return a;
      };
    });
  }

  // checkpointLookupByName(name, flags?): Promise<VirtCheckpoint>
  Napi::Value CheckpointLookupByName(const Napi::CallbackInfo& info) {
    std::string name = StrArg(info, 0, "name");
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainCheckpointLookupByName", [d, name, flags]() {
      virDomainCheckpointPtr c = virDomainCheckpointLookupByName(d.get(), name.c_str(), flags);
      if (c == nullptr) ThrowLast("virDomainCheckpointLookupByName");
      return CheckpointValue(c);
    });
  }

  template <int (*Fn)(virDomainPtr, const char**, unsigned int, unsigned int)>
  Napi::Value FsCall(const Napi::CallbackInfo& info, const char* name) {
    std::vector<std::string> mps = StrArrayArg(info, 0, "mountpoints");
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), name, [d, mps, flags, name]() {
      std::vector<const char*> p;
      for (const std::string& s : mps) p.push_back(s.c_str());
      const int r = Fn(d.get(), p.empty() ? nullptr : p.data(), static_cast<unsigned int>(p.size()), flags);
      if (r < 0) ThrowLast(name);
      return Num(r);
    });
  }
  // fsFreeze(mountpoints?: string[], flags?): Promise<number> (file systems frozen)
  Napi::Value FSFreeze(const Napi::CallbackInfo& info) { return FsCall<virDomainFSFreeze>(info, "virDomainFSFreeze"); }
  // fsThaw(mountpoints?: string[], flags?): Promise<number> (file systems thawed)
  Napi::Value FSThaw(const Napi::CallbackInfo& info) { return FsCall<virDomainFSThaw>(info, "virDomainFSThaw"); }

  // getGuestInfo(types?, flags?): Promise<{[field]: number|string|boolean}>
  Napi::Value GetGuestInfo(const Napi::CallbackInfo& info) {
    const unsigned int types = FlagsArg(info, 0);
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainGetGuestInfo", [d, types, flags]() -> Build {
      virTypedParameterPtr params = nullptr;
      int n = 0;
      if (virDomainGetGuestInfo(d.get(), types, &params, &n, flags) < 0) ThrowLast("virDomainGetGuestInfo");
      std::vector<Param> ps = CopyParams(params, n);
      virTypedParamsFree(params, n);
      return [ps = std::move(ps)](Napi::Env env) -> Napi::Value { return ParamsToObject(env, ps); };
    });
  }

  // qemuMonitorCommand(cmd, flags?): Promise<string> (flags 1 = HMP)
  Napi::Value QemuMonitorCommand(const Napi::CallbackInfo& info) {
    std::string cmd = StrArg(info, 0, "cmd");
    const unsigned int flags = FlagsArg(info, 1);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainQemuMonitorCommand", [d, cmd, flags]() {
      char* result = nullptr;
      if (virDomainQemuMonitorCommand(d.get(), cmd.c_str(), &result, flags) < 0) {
        ThrowLast("virDomainQemuMonitorCommand");
      }
      return Str(TakeString(result));
    });
  }

  // qemuAgentCommand(cmd, timeoutSeconds, flags?): Promise<string> (the agent's JSON reply).
  // timeoutSeconds: > 0 seconds, or libvirt's -2 (default), -1 (block), 0 (no wait).
  Napi::Value QemuAgentCommand(const Napi::CallbackInfo& info) {
    std::string cmd = StrArg(info, 0, "cmd");
    if (info.Length() <= 1 || !info[1].IsNumber()) {
      throw Napi::TypeError::New(info.Env(), "timeoutSeconds must be a number");
    }
    const double tv = info[1].As<Napi::Number>().DoubleValue();
    if (!(tv >= -2 && tv <= 2147483647.0) || tv != static_cast<double>(static_cast<int>(tv))) {
      throw Napi::RangeError::New(info.Env(), "timeoutSeconds must be an integer >= -2");
    }
    const int timeout = static_cast<int>(tv);
    const unsigned int flags = FlagsArg(info, 2);
    DomP d = dom_;
    return Job::Run(info.Env(), "virDomainQemuAgentCommand", [d, cmd, timeout, flags]() {
      char* result = virDomainQemuAgentCommand(d.get(), cmd.c_str(), timeout, flags);
      if (result == nullptr) ThrowLast("virDomainQemuAgentCommand");
      return Str(TakeString(result));
    });
  }

  DomP dom_;
};

Build DomainValue(virDomainPtr d) {
  DomP p = WrapDom(d);
  return [p](Napi::Env env) -> Napi::Value { return NewWrapped(env, tlCtors->dom, p); };
}

// ---------------------------------------------------------------------------------------
// Connection

class VirtConnect : public Napi::ObjectWrap<VirtConnect> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "VirtConnect",
                       {
                           InstanceMethod<&VirtConnect::Close>("close"),
                           InstanceMethod<&VirtConnect::IsAlive>("isAlive"),
                           InstanceMethod<&VirtConnect::GetLibVersion>("getLibVersion"),
                           InstanceMethod<&VirtConnect::GetHostname>("getHostname"),
                           InstanceMethod<&VirtConnect::StorageVolumePath>("storageVolumePath"),
                           InstanceMethod<&VirtConnect::ListStoragePools>("listStoragePools"),
                           InstanceMethod<&VirtConnect::RefreshStoragePool>("refreshStoragePool"),
                           InstanceMethod<&VirtConnect::LookupDomainByName>("lookupDomainByName"),
                           InstanceMethod<&VirtConnect::LookupDomainByUUIDString>("lookupDomainByUUIDString"),
                           InstanceMethod<&VirtConnect::DefineDomainXML>("defineDomainXML"),
                           InstanceMethod<&VirtConnect::CreateDomainXML>("createDomainXML"),
                           InstanceMethod<&VirtConnect::ListAllDomains>("listAllDomains"),
                       });
  }

  explicit VirtConnect(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtConnect>(info) {
    conn_ = TakeHandle<ConnP>(info, "VirtConnect");
  }

 private:
  ConnP Conn(const Napi::CallbackInfo& info) {
    if (!conn_) {
      VirtErr e;
      e.code = VIR_ERR_INVALID_CONN;
      e.msg = "libvirt connection is closed";
      throw MakeError(info.Env(), e);
    }
    return conn_;
  }

  // close(): Promise<void>. Drops this object's reference; the connection itself closes when
  // no domain/checkpoint object holds it any more. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    auto c = std::make_shared<ConnP>(std::move(conn_));
    conn_.reset();
    return Job::Run(info.Env(), "virConnectClose", [c]() {
      c->reset();
      return Undef();
    });
  }

  Napi::Value IsAlive(const Napi::CallbackInfo& info) {
    if (!conn_) return Napi::Boolean::New(info.Env(), false);
    const int r = virConnectIsAlive(conn_.get());  // local state, no RPC
    virResetLastError();
    return Napi::Boolean::New(info.Env(), r == 1);
  }

  Napi::Value GetLibVersion(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    return Job::Run(info.Env(), "virConnectGetLibVersion", [c]() {
      unsigned long v = 0;
      if (virConnectGetLibVersion(c.get(), &v) < 0) ThrowLast("virConnectGetLibVersion");
      return Num(static_cast<double>(v));
    });
  }

  Napi::Value GetHostname(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    return Job::Run(info.Env(), "virConnectGetHostname", [c]() {
      char* h = virConnectGetHostname(c.get());
      if (h == nullptr) ThrowLast("virConnectGetHostname");
      return Str(TakeString(h));
    });
  }

  // Path of a storage volume (disk type='volume'): pool and volume looked up by name.
  Napi::Value StorageVolumePath(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string pool = StrArg(info, 0, "pool");
    std::string vol = StrArg(info, 1, "volume");
    return Job::Run(info.Env(), "virStorageVolGetPath", [c, pool, vol]() {
      virStoragePoolPtr p = virStoragePoolLookupByName(c.get(), pool.c_str());
      if (p == nullptr) ThrowLast("virStoragePoolLookupByName");
      virStorageVolPtr v = virStorageVolLookupByName(p, vol.c_str());
      if (v == nullptr) {
        VirtErr saved;
        try {
          ThrowLast("virStorageVolLookupByName");
        } catch (const VirtErr& e) {
          saved = e;
        }
        virStoragePoolFree(p);
        throw saved;
      }
      char* path = virStorageVolGetPath(v);
      if (path == nullptr) {
        VirtErr saved;
        try {
          ThrowLast("virStorageVolGetPath");
        } catch (const VirtErr& e) {
          saved = e;
        }
        virStorageVolFree(v);
        virStoragePoolFree(p);
        throw saved;
      }
      virStorageVolFree(v);
      virStoragePoolFree(p);
      return Str(TakeString(path));
    });
  }

  // listStoragePools(): Promise<Array<{name: string, active: boolean, xml: string}>> (the XML is
  // virStoragePoolGetXMLDesc with flags 0; its target path is read on the JS side)
  Napi::Value ListStoragePools(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    return Job::Run(info.Env(), "virConnectListAllStoragePools", [c]() -> Build {
      struct Pool {
        std::string name, xml;
        bool active = false;
      };
      virStoragePoolPtr* pools = nullptr;
      const int n = virConnectListAllStoragePools(c.get(), &pools, 0);
      if (n < 0) ThrowLast("virConnectListAllStoragePools");
      std::vector<Pool> out;
      VirtErr saved;
      bool failed = false;
      for (int i = 0; i < n; i++) {
        if (!failed) {
          Pool p;
          const char* name = virStoragePoolGetName(pools[i]);
          p.name = name != nullptr ? name : "";
          const int active = virStoragePoolIsActive(pools[i]);
          char* xml = active < 0 ? nullptr : virStoragePoolGetXMLDesc(pools[i], 0);
          if (xml == nullptr) {
            try {
              ThrowLast(active < 0 ? "virStoragePoolIsActive" : "virStoragePoolGetXMLDesc");
            } catch (const VirtErr& e) {
              saved = e;
            }
            failed = true;
          } else {
            p.active = active == 1;
            p.xml = TakeString(xml);
            out.push_back(std::move(p));
          }
        }
        virStoragePoolFree(pools[i]);
      }
      free(pools);
      if (failed) throw saved;
      return [out = std::move(out)](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, out.size());
        for (size_t i = 0; i < out.size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("name", Napi::String::New(env, out[i].name));
          o.Set("active", Napi::Boolean::New(env, out[i].active));
          o.Set("xml", Napi::String::New(env, out[i].xml));
          a.Set(static_cast<uint32_t>(i), o);
        }
        return a;
      };
    });
  }

  // refreshStoragePool(name): Promise<void> (virStoragePoolRefresh of an active pool)
  Napi::Value RefreshStoragePool(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string name = StrArg(info, 0, "name");
    return Job::Run(info.Env(), "virStoragePoolRefresh", [c, name]() {
      virStoragePoolPtr p = virStoragePoolLookupByName(c.get(), name.c_str());
      if (p == nullptr) ThrowLast("virStoragePoolLookupByName");
      if (virStoragePoolRefresh(p, 0) < 0) {
        VirtErr saved;
        try {
          ThrowLast("virStoragePoolRefresh");
        } catch (const VirtErr& e) {
          saved = e;
        }
        virStoragePoolFree(p);
        throw saved;
      }
      virStoragePoolFree(p);
      return Undef();
    });
  }

  Napi::Value LookupDomainByName(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string name = StrArg(info, 0, "name");
    return Job::Run(info.Env(), "virDomainLookupByName", [c, name]() {
      virDomainPtr d = virDomainLookupByName(c.get(), name.c_str());
      if (d == nullptr) ThrowLast("virDomainLookupByName");
      return DomainValue(d);
    });
  }

  Napi::Value LookupDomainByUUIDString(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string uuid = StrArg(info, 0, "uuid");
    return Job::Run(info.Env(), "virDomainLookupByUUIDString", [c, uuid]() {
      virDomainPtr d = virDomainLookupByUUIDString(c.get(), uuid.c_str());
      if (d == nullptr) ThrowLast("virDomainLookupByUUIDString");
      return DomainValue(d);
    });
  }

  // defineDomainXML(xml, flags?): Promise<VirtDomain> (persistent, not started)
  Napi::Value DefineDomainXML(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string xml = StrArg(info, 0, "xml");
    const unsigned int flags = FlagsArg(info, 1);
    return Job::Run(info.Env(), "virDomainDefineXMLFlags", [c, xml, flags]() {
      virDomainPtr d = virDomainDefineXMLFlags(c.get(), xml.c_str(), flags);
      if (d == nullptr) ThrowLast("virDomainDefineXMLFlags");
      return DomainValue(d);
    });
  }

  // createDomainXML(xml, flags?): Promise<VirtDomain> (transient, started)
  Napi::Value CreateDomainXML(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    std::string xml = StrArg(info, 0, "xml");
    const unsigned int flags = FlagsArg(info, 1);
    return Job::Run(info.Env(), "virDomainCreateXML", [c, xml, flags]() {
      virDomainPtr d = virDomainCreateXML(c.get(), xml.c_str(), flags);
      if (d == nullptr) ThrowLast("virDomainCreateXML");
      return DomainValue(d);
    });
  }

  // listAllDomains(flags?): Promise<VirtDomain[]>
  Napi::Value ListAllDomains(const Napi::CallbackInfo& info) {
    ConnP c = Conn(info);
    const unsigned int flags = FlagsArg(info, 0);
    return Job::Run(info.Env(), "virConnectListAllDomains", [c, flags]() -> Build {
      virDomainPtr* doms = nullptr;
      const int n = virConnectListAllDomains(c.get(), &doms, flags);
      if (n < 0) ThrowLast("virConnectListAllDomains");
      std::vector<DomP> v;
      for (int i = 0; i < n; i++) v.push_back(WrapDom(doms[i]));
      free(doms);
      return [v = std::move(v)](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), NewWrapped(env, tlCtors->dom, v[i]));
        return a;
      };
    });
  }

  ConnP conn_;
};

// ---------------------------------------------------------------------------------------
// Opening a connection

struct Creds {
  std::string user, password;
};

// SASL (and other) credential requests, answered from the given user and password.
int AuthCallback(virConnectCredentialPtr cred, unsigned int ncred, void* cbdata) {
  const Creds* c = static_cast<const Creds*>(cbdata);
  for (unsigned int i = 0; i < ncred; i++) {
    const std::string* v = nullptr;
    switch (cred[i].type) {
      case VIR_CRED_AUTHNAME:
      case VIR_CRED_USERNAME: v = &c->user; break;
      case VIR_CRED_PASSPHRASE:
      case VIR_CRED_NOECHOPROMPT: v = &c->password; break;
      default: return -1;
    }
    cred[i].result = strdup(v->c_str());
    if (cred[i].result == nullptr) return -1;
    cred[i].resultlen = static_cast<unsigned int>(v->size());
  }
  return 0;
}

// virtOpen(uri: string, user?: string | null, password?: string | null): Promise<VirtConnect>
// Without user and password: virConnectOpen (no interactive prompts). With either:
// virConnectOpenAuth answering AUTHNAME/USERNAME and PASSPHRASE/NOECHOPROMPT.
Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string uri = StrArg(info, 0, "uri");
  auto creds = std::make_shared<Creds>();
  bool auth = OptStrArg(info, 1, "user", &creds->user);
  auth = OptStrArg(info, 2, "password", &creds->password) || auth;
  return Job::Run(info.Env(), "virConnectOpen", [uri, creds, auth]() -> Build {
    const char* u = uri.empty() ? nullptr : uri.c_str();
    virConnectPtr c;
    if (auth) {
      int types[] = {VIR_CRED_AUTHNAME, VIR_CRED_USERNAME, VIR_CRED_PASSPHRASE, VIR_CRED_NOECHOPROMPT};
      virConnectAuth a;
      a.credtype = types;
      a.ncredtype = sizeof types / sizeof types[0];
      a.cb = AuthCallback;
      a.cbdata = creds.get();
      c = virConnectOpenAuth(u, &a, 0);
    } else {
      c = virConnectOpen(u);
    }
    if (c == nullptr) ThrowLast("virConnectOpen");
    ConnP p = WrapConn(c);
    return [p](Napi::Env env) -> Napi::Value { return NewWrapped(env, tlCtors->conn, p); };
  });
}

}  // namespace

void InitVirt(Napi::Env env, Napi::Object exports) {
  if (virInitialize() < 0) throw Napi::Error::New(env, "virInitialize failed");
  virSetErrorFunc(nullptr, NoopErrorFunc);

  auto* ctors = new Ctors();
  Napi::Function conn = VirtConnect::Define(env);
  Napi::Function dom = VirtDomain::Define(env);
  Napi::Function ck = VirtCheckpoint::Define(env);
  ctors->conn = Napi::Persistent(conn);
  ctors->dom = Napi::Persistent(dom);
  ctors->ck = Napi::Persistent(ck);
  tlCtors = ctors;
  env.AddCleanupHook([ctors]() {
    if (tlCtors == ctors) tlCtors = nullptr;
    delete ctors;
  });

  exports.Set("virtOpen", Napi::Function::New(env, Open, "virtOpen"));
  exports.Set("VirtConnect", conn);
  exports.Set("VirtDomain", dom);
  exports.Set("VirtCheckpoint", ck);

  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* name, double v) { c.Set(name, Napi::Number::New(env, v)); };
#define K(x) set(#x, x)
  // virDomainState
  K(VIR_DOMAIN_NOSTATE); K(VIR_DOMAIN_RUNNING); K(VIR_DOMAIN_BLOCKED); K(VIR_DOMAIN_PAUSED);
  K(VIR_DOMAIN_SHUTDOWN); K(VIR_DOMAIN_SHUTOFF); K(VIR_DOMAIN_CRASHED); K(VIR_DOMAIN_PMSUSPENDED);
  // create/start
  K(VIR_DOMAIN_NONE); K(VIR_DOMAIN_START_PAUSED); K(VIR_DOMAIN_START_AUTODESTROY);
  K(VIR_DOMAIN_START_BYPASS_CACHE); K(VIR_DOMAIN_START_FORCE_BOOT); K(VIR_DOMAIN_START_VALIDATE);
  // XML
  K(VIR_DOMAIN_XML_SECURE); K(VIR_DOMAIN_XML_INACTIVE); K(VIR_DOMAIN_XML_UPDATE_CPU); K(VIR_DOMAIN_XML_MIGRATABLE);
  // undefine
  K(VIR_DOMAIN_UNDEFINE_MANAGED_SAVE); K(VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA); K(VIR_DOMAIN_UNDEFINE_NVRAM);
  K(VIR_DOMAIN_UNDEFINE_KEEP_NVRAM); K(VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA);
  // backup
  K(VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL);
  // jobs
  K(VIR_DOMAIN_JOB_NONE); K(VIR_DOMAIN_JOB_BOUNDED); K(VIR_DOMAIN_JOB_UNBOUNDED); K(VIR_DOMAIN_JOB_COMPLETED);
  K(VIR_DOMAIN_JOB_FAILED); K(VIR_DOMAIN_JOB_CANCELLED);
  K(VIR_DOMAIN_JOB_STATS_COMPLETED); K(VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED);
  // checkpoints
  K(VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE); K(VIR_DOMAIN_CHECKPOINT_CREATE_QUIESCE);
  K(VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE);
  K(VIR_DOMAIN_CHECKPOINT_XML_SECURE); K(VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN); K(VIR_DOMAIN_CHECKPOINT_XML_SIZE);
  K(VIR_DOMAIN_CHECKPOINT_LIST_ROOTS); K(VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL); K(VIR_DOMAIN_CHECKPOINT_LIST_LEAVES);
  K(VIR_DOMAIN_CHECKPOINT_LIST_NO_LEAVES);
  K(VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN); K(VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY);
  K(VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY);
  // guest info
  K(VIR_DOMAIN_GUEST_INFO_USERS); K(VIR_DOMAIN_GUEST_INFO_OS); K(VIR_DOMAIN_GUEST_INFO_TIMEZONE);
  K(VIR_DOMAIN_GUEST_INFO_HOSTNAME); K(VIR_DOMAIN_GUEST_INFO_FILESYSTEM); K(VIR_DOMAIN_GUEST_INFO_DISKS);
  K(VIR_DOMAIN_GUEST_INFO_INTERFACES);
  // libvirt-qemu
  K(VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT); K(VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP);
  // errors (virErrorNumber) the callers test for
  K(VIR_ERR_OK); K(VIR_ERR_INTERNAL_ERROR); K(VIR_ERR_INVALID_CONN); K(VIR_ERR_NO_SUPPORT); K(VIR_ERR_INVALID_ARG);
  K(VIR_ERR_OPERATION_FAILED); K(VIR_ERR_OPERATION_INVALID); K(VIR_ERR_NO_DOMAIN); K(VIR_ERR_AUTH_FAILED);
  K(VIR_ERR_SYSTEM_ERROR); K(VIR_ERR_RPC); K(VIR_ERR_NO_DOMAIN_CHECKPOINT); K(VIR_ERR_CHECKPOINT_INCONSISTENT);
  K(VIR_ERR_AGENT_UNRESPONSIVE); K(VIR_ERR_OPERATION_UNSUPPORTED); K(VIR_ERR_ARGUMENT_UNSUPPORTED);
  K(VIR_ERR_NO_DOMAIN_BACKUP); K(VIR_ERR_OPERATION_TIMEOUT);
#undef K
  exports.Set("virtConstants", c);
}

}  // namespace virtnbd
