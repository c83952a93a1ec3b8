#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wanmirror::fuzz::peer_frames(data));
