// LZ4 frame decoding with the system's liblz4.
//
// Why here and not lz4-napi: lz4-napi 2.10's decoders (decompressFrameSync and the async
// decompressFrame alike) never release their output: RSS grew by ~30 MiB per decoded 32 MiB
// frame, linearly (160 decodes: +3.3 GB async, +4.9 GB sync), with forced GC. The plugin
// worker, restore and verify decode many frames; bounded memory needs a decoder that writes into
// a buffer we own. Its compressors leak the same way (80 compressions of 32 MiB: +1.4 GB sync,
// +0.8 GB async), so frames are also written here.
//
//   lz4DecodeFrame(src: Buffer, dst: Buffer) -> number            synchronous
//   lz4DecodeFrameAsync(src: Buffer, dst: Buffer) -> Promise<number>   on the libuv pool
//   lz4CompressBound(srcLength) -> number                          dst size needed below
//   lz4CompressFrame(src, dst, level) -> number                    synchronous
//   lz4CompressFrameAsync(src, dst, level) -> Promise<number>      on the libuv pool
//
// Frames are written as FORMAT.md §3.2 says: 64 KiB linked blocks, block checksums, content
// size, content checksum; level 0-2 fast mode, >= 3 LZ4-HC (capped at 12 by liblz4).
//
// `src` must hold exactly one complete frame; it is decoded into `dst`, whose length is the most
// the frame may decode to. Returns the decoded length. liblz4 verifies the block and content
// checksums the frame declares. Errors: Error with `code` 'ELZ4' and liblz4's error name; a frame
// decoding to more than dst.length, an incomplete frame, or bytes after its end are errors too.
#include "lz4.h"

#include <lz4frame.h>

#include <string>

namespace virtnbd {
namespace {

// Decodes; returns "" and sets *out on success, else the error text.
std::string DecodeFrame(const uint8_t* src, size_t srcLen, uint8_t* dst, size_t dstLen, size_t* out) {
  LZ4F_dctx* dctx = nullptr;
  LZ4F_errorCode_t rc = LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION);
  if (LZ4F_isError(rc)) return std::string("LZ4F_createDecompressionContext: ") + LZ4F_getErrorName(rc);
  size_t inPos = 0;
  size_t outPos = 0;
  std::string err;
  for (;;) {
    size_t inSize = srcLen - inPos;
    size_t outSize = dstLen - outPos;
    size_t hint = LZ4F_decompress(dctx, dst + outPos, &outSize, src + inPos, &inSize, nullptr);
    if (LZ4F_isError(hint)) {
      err = LZ4F_getErrorName(hint);
      break;
    }
    inPos += inSize;
    outPos += outSize;
    if (hint == 0) {  // frame complete, checksums verified
      if (inPos != srcLen) err = std::to_string(srcLen - inPos) + " bytes after the end of the frame";
      break;
    }
    if (inPos == srcLen) {
      err = "truncated frame";
      break;
    }
    if (outPos == dstLen && inSize == 0 && outSize == 0) {
      err = "frame decodes to more than " + std::to_string(dstLen) + " bytes";
      break;
    }
  }
  LZ4F_freeDecompressionContext(dctx);
  if (err.empty()) *out = outPos;
  return err;
}

LZ4F_preferences_t Prefs(size_t srcLen, int level) {
  LZ4F_preferences_t p = LZ4F_INIT_PREFERENCES;
  p.frameInfo.blockSizeID = LZ4F_max64KB;
  p.frameInfo.blockMode = LZ4F_blockLinked;
  p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
  p.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
  p.frameInfo.contentSize = srcLen;
  p.compressionLevel = level;
  return p;
}

std::string CompressFrame(const uint8_t* src, size_t srcLen, uint8_t* dst, size_t dstLen, int level, size_t* out) {
  LZ4F_preferences_t p = Prefs(srcLen, level);
  size_t n = LZ4F_compressFrame(dst, dstLen, src, srcLen, &p);
  if (LZ4F_isError(n)) return std::string("LZ4F_compressFrame: ") + LZ4F_getErrorName(n);
  *out = n;
  return "";
}

Napi::Error Lz4Error(Napi::Env env, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, "LZ4: " + msg);
  e.Set("code", Napi::String::New(env, "ELZ4"));
  return e;
}

void CheckArgs(const Napi::CallbackInfo& info, const char* name) {
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsBuffer()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + "(src: Buffer, dst: Buffer)");
  }
}

Napi::Value DecodeSync(const Napi::CallbackInfo& info) {
  CheckArgs(info, "lz4DecodeFrame");
  auto src = info[0].As<Napi::Buffer<uint8_t>>();
  auto dst = info[1].As<Napi::Buffer<uint8_t>>();
  size_t n = 0;
  std::string err = DecodeFrame(src.Data(), src.Length(), dst.Data(), dst.Length(), &n);
  if (!err.empty()) throw Lz4Error(info.Env(), err);
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

Napi::Value CompressBound(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "lz4CompressBound(length: number)");
  int64_t len = info[0].As<Napi::Number>().Int64Value();
  if (len < 0) throw Napi::RangeError::New(info.Env(), "lz4CompressBound: negative length");
  LZ4F_preferences_t p = Prefs(static_cast<size_t>(len), 0);
  return Napi::Number::New(info.Env(), static_cast<double>(LZ4F_compressFrameBound(static_cast<size_t>(len), &p)));
}

int LevelArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 3 || !info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "lz4CompressFrame(src: Buffer, dst: Buffer, level: number)");
  return info[2].As<Napi::Number>().Int32Value();
}

Napi::Value CompressSync(const Napi::CallbackInfo& info) {
  CheckArgs(info, "lz4CompressFrame");
  int level = LevelArg(info);
  auto src = info[0].As<Napi::Buffer<uint8_t>>();
  auto dst = info[1].As<Napi::Buffer<uint8_t>>();
  size_t n = 0;
  std::string err = CompressFrame(src.Data(), src.Length(), dst.Data(), dst.Length(), level, &n);
  if (!err.empty()) throw Lz4Error(info.Env(), err);
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

class FrameWorker : public Napi::AsyncWorker {
 public:
  // level < 0: decode; else compress at that level
  FrameWorker(Napi::Env env, Napi::Buffer<uint8_t> src, Napi::Buffer<uint8_t> dst, int level)
      : Napi::AsyncWorker(env, "lz4FrameAsync"),
        level_(level),
        deferred_(Napi::Promise::Deferred::New(env)),
        src_(Napi::Persistent(src)),
        dst_(Napi::Persistent(dst)),
        srcData_(src.Data()),
        srcLen_(src.Length()),
        dstData_(dst.Data()),
        dstLen_(dst.Length()) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    err_ = level_ < 0 ? DecodeFrame(srcData_, srcLen_, dstData_, dstLen_, &n_) : CompressFrame(srcData_, srcLen_, dstData_, dstLen_, level_, &n_);
  }
  void OnOK() override {
    if (err_.empty()) deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(n_)));
    else deferred_.Reject(Lz4Error(Env(), err_).Value());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  int level_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Buffer<uint8_t>> src_;  // keep both buffers alive while decoding
  Napi::Reference<Napi::Buffer<uint8_t>> dst_;
  const uint8_t* srcData_;
  size_t srcLen_;
  uint8_t* dstData_;
  size_t dstLen_;
  size_t n_ = 0;
  std::string err_;
};

Napi::Value DecodeAsync(const Napi::CallbackInfo& info) {
  CheckArgs(info, "lz4DecodeFrameAsync");
  auto* w = new FrameWorker(info.Env(), info[0].As<Napi::Buffer<uint8_t>>(), info[1].As<Napi::Buffer<uint8_t>>(), -1);
  Napi::Promise p = w->Promise();
  w->Queue();  // the worker deletes itself after OnOK/OnError
  return p;
}

Napi::Value CompressAsync(const Napi::CallbackInfo& info) {
  CheckArgs(info, "lz4CompressFrameAsync");
  int level = LevelArg(info);
  if (level < 0) level = 0;
  auto* w = new FrameWorker(info.Env(), info[0].As<Napi::Buffer<uint8_t>>(), info[1].As<Napi::Buffer<uint8_t>>(), level);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitLz4(Napi::Env env, Napi::Object exports) {
  exports.Set("lz4DecodeFrame", Napi::Function::New(env, DecodeSync, "lz4DecodeFrame"));
  exports.Set("lz4DecodeFrameAsync", Napi::Function::New(env, DecodeAsync, "lz4DecodeFrameAsync"));
  exports.Set("lz4CompressBound", Napi::Function::New(env, CompressBound, "lz4CompressBound"));
  exports.Set("lz4CompressFrame", Napi::Function::New(env, CompressSync, "lz4CompressFrame"));
  exports.Set("lz4CompressFrameAsync", Napi::Function::New(env, CompressAsync, "lz4CompressFrameAsync"));
}

}  // namespace virtnbd
