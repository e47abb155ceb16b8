// Module entry point of virtnbd_native. Each part registers itself on `exports`;
// add further parts (e.g. the libvirt binding) with one Init call each.
#include <napi.h>

#include "fslock.h"
#include "lz4.h"
#include "nbd.h"
#include "virt.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  virtnbd::InitNbd(env, exports);
  virtnbd::InitVirt(env, exports);
  virtnbd::InitFsLock(env, exports);
  virtnbd::InitLz4(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(virtnbd_native, Init)
