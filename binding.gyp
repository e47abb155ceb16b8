{
  "targets": [
    {
      "target_name": "virtnbd_native",
      "sources": ["native/addon.cc", "native/nbd.cc", "native/virt.cc", "native/fslock.cc", "native/lz4.cc"],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').gyp\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-Wall", "-Wextra", "<!@(pkg-config --cflags libnbd)", "<!@(pkg-config --cflags libvirt libvirt-qemu)", "<!@(pkg-config --cflags liblz4)"],
      "libraries": ["<!@(pkg-config --libs libnbd)", "<!@(pkg-config --libs libvirt libvirt-qemu)", "<!@(pkg-config --libs liblz4)"]
    },
    {
      "target_name": "nbdkit-virtnbd-plugin",
      "type": "shared_library",
      "product_prefix": "",
      "sources": ["plugin/virtnbd-plugin.c", "plugin/vnbd-table.c", "plugin/vnbd-lz4.c"],
      "cflags": ["-Wall", "-Wextra", "-fPIC", "-std=gnu11", "<!@(pkg-config --cflags nbdkit)", "<!@(pkg-config --cflags liblz4)"],
      "ldflags": ["-pthread"],
      "libraries": ["<!@(pkg-config --libs liblz4)"]
    }
  ]
}
