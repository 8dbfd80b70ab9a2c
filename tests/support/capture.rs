//! Log lines captured through `Config::log_writer`, for assertions.
#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Arc, Mutex};

/// Everything the log layer wrote, in order.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// The writer to give `Config::log_writer`.
    pub fn writer(&self) -> impl Fn(&[u8]) + Send + Sync + 'static {
        let buf = self.0.clone();
        move |line| buf.lock().unwrap().extend_from_slice(line)
    }

    /// The lines so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Forgets the lines so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}
