#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wanmirror::fuzz::response_frame(data));
