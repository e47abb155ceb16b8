// libvirt binding: connections, domains, checkpoints, backup jobs (plus libvirt-qemu's
// monitor command). See native/README.md for the threading model and error mapping.
#pragma once

#include <napi.h>

namespace virtnbd {

// Adds `virtOpen(uri, user?, password?)`, the classes `VirtConnect`, `VirtDomain`,
// `VirtCheckpoint` (not constructible from JS) and `virtConstants` to the module's exports.
void InitVirt(Napi::Env env, Napi::Object exports);

}  // namespace virtnbd
