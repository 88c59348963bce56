//! One [`Stack`] shared by the tests of a test binary that use the same config.
//!
//! Envoy compiles airlock.wasm with V8 at start-up (seconds on a small machine), so a
//! stack per test would dominate the suite's run time. A [`SharedStack`] starts once, on
//! first use, and lives until the test process exits, when an `atexit` hook drops it
//! (killing Envoy and the upstream and removing its temp dir like any other stack).
//!
//! Only share a stack between tests that cannot disturb each other: tests run in
//! parallel threads, so counter assertions on a shared stack must be about counters only
//! that test moves, or be lower bounds.

use std::ops::Deref;
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};

use crate::stack::Stack;

/// Every shared stack started in this process, dropped at exit.
static STARTED: Mutex<Vec<Arc<Stack>>> = Mutex::new(Vec::new());

extern "C" fn drop_shared_stacks() {
    // Never panic here (that would abort the exit): a poisoned lock still holds the list.
    let stacks = match STARTED.lock() {
        Ok(mut list) => std::mem::take(&mut *list),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    drop(stacks);
}

fn register(stack: &Arc<Stack>) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no arguments.
        unsafe {
            libc::atexit(drop_shared_stacks);
        }
    });
    match STARTED.lock() {
        Ok(mut list) => list.push(Arc::clone(stack)),
        Err(poisoned) => poisoned.into_inner().push(Arc::clone(stack)),
    }
}

/// A lazily started stack for a `static`.
///
/// ```no_run
/// use airlock_e2e::{shared::SharedStack, builder_for, test_plugin_config, TestKeys};
/// static STACK: SharedStack = SharedStack::new();
/// let stack = STACK.get(|| builder_for(test_plugin_config(), TestKeys::shared()).start());
/// ```
pub struct SharedStack {
    /// Weak: the exit hook's list must hold the only strong reference between tests, or
    /// dropping the list at exit would not drop the stack.
    cell: OnceLock<Result<Weak<Stack>, String>>,
}

impl Default for SharedStack {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedStack {
    pub const fn new() -> Self {
        SharedStack { cell: OnceLock::new() }
    }

    /// The stack, started with `start` by the first caller. Panics (failing the calling
    /// test) if it could not start; every later caller fails with the same message.
    pub fn get(&self, start: impl FnOnce() -> Result<Stack, String>) -> SharedRef {
        let started = self.cell.get_or_init(|| {
            start().map(|stack| {
                let stack = Arc::new(stack);
                register(&stack);
                Arc::downgrade(&stack)
            })
        });
        match started {
            Ok(stack) => match stack.upgrade() {
                Some(stack) => SharedRef(stack),
                None => panic!("the shared stack was already dropped (the process is exiting)"),
            },
            Err(e) => panic!("the shared stack did not start: {e}"),
        }
    }
}

/// A test's handle on a shared stack. If the test fails, the stack's files are kept and
/// its Envoy log tail is printed (the stack itself lives on for the other tests).
pub struct SharedRef(Arc<Stack>);

impl Deref for SharedRef {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl Drop for SharedRef {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.keep_files();
            eprintln!(
                "--- shared stack: envoy log tail ({}) ---\n{}\n---",
                self.0.dir().display(),
                self.0.envoy_log_tail()
            );
        }
    }
}
