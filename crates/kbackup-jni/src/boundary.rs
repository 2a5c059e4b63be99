//! The one wrapper every entry point goes through.
//!
//! It turns everything that can go wrong on the Rust side (an `Error`, a panic) into a Java
//! exception, forwards queued log lines, and answers a default value, so no input can take the
//! worker JVM down.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use jni::objects::{JByteArray, JClass, JValue};
use jni::JNIEnv;
use kbackup_core::Error;

use crate::logging;

const FATAL_CLASS: &str = "io/kbackup/connect/KbackupException";
const RETRIABLE_CLASS: &str = "io/kbackup/connect/KbackupRetriableException";

thread_local! {
    /// Where and why the last panic on this thread happened, captured by our hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Records panics (message and location) for the wrapper instead of printing them to the
/// worker's stderr; the wrapper puts them in the exception and the log.
fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{location}", payload_text(info.payload()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Which Java exception an error becomes. Exhaustive on purpose: a new variant must be decided.
fn exception_class(e: &Error) -> &'static str {
    match e {
        Error::Kafka { retriable, .. } => {
            if *retriable {
                RETRIABLE_CLASS
            } else {
                FATAL_CLASS
            }
        }
        Error::Io { .. } => {
            if e.is_retriable() {
                RETRIABLE_CLASS
            } else {
                FATAL_CLASS
            }
        }
        Error::Corrupt { .. }
        | Error::Config(_)
        | Error::NotFound(_)
        | Error::Codec(_)
        | Error::State(_) => FATAL_CLASS,
    }
}

/// Runs one entry point: `f` does the work; `default` is answered when it fails (Java sees the
/// exception, not the value).
pub fn run<'local, T>(
    env: &mut JNIEnv<'local>,
    class: &JClass<'local>,
    name: &str,
    default: T,
    f: impl FnOnce(&mut JNIEnv<'local>) -> Result<T, Error>,
) -> T {
    install_panic_hook();
    logging::init();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(env)));
    let failure = match outcome {
        Ok(Ok(value)) => {
            drain_logs(env, class);
            return value;
        }
        Ok(Err(e)) => (exception_class(&e), format!("kbackup {name} failed: {e}")),
        Err(payload) => {
            let detail = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| payload_text(payload.as_ref()));
            let msg = format!(
                "kbackup native code panicked in {name}: {detail}. This is a bug in kbackup, please \
                 report it with this message; restart the task to continue (written data stays \
                 consistent)"
            );
            log::error!(target: "kbackup_jni", "{msg}");
            (FATAL_CLASS, msg)
        }
    };
    // A Java exception raised inside `f` (for example by a JNI call) would make our own calls
    // below illegal; ours carries more context, so it replaces it.
    if env.exception_check().unwrap_or(false) {
        let _ = env.exception_clear();
    }
    drain_logs(env, class);
    if env.throw_new(failure.0, &failure.1).is_err() {
        // The exception class itself could not be found: the shim classes do not match.
        let _ = env.exception_clear();
        let _ = env.throw_new("java/lang/IllegalStateException", &failure.1);
    }
    default
}

/// Forwards queued log lines to `Native.log` on this (Java) thread.
fn drain_logs(env: &mut JNIEnv, class: &JClass) {
    if env.exception_check().unwrap_or(true) {
        return; // calling Java with an exception pending is illegal; the lines wait for the next call
    }
    for (level, target, message) in logging::take() {
        let (Ok(t), Ok(m)) = (env.new_string(&target), env.new_string(&message)) else {
            let _ = env.exception_clear();
            continue;
        };
        let r = env.call_static_method(
            class,
            "log",
            "(ILjava/lang/String;Ljava/lang/String;)V",
            &[JValue::Int(level), JValue::Object(&t), JValue::Object(&m)],
        );
        if r.is_err() || env.exception_check().unwrap_or(false) {
            // A failing logger must not fail the call that logged.
            let _ = env.exception_clear();
        }
        // Delete eagerly: a long drain would otherwise overflow the local reference table.
        let _ = env.delete_local_ref(t);
        let _ = env.delete_local_ref(m);
    }
}

/// Copies a Java `byte[]` argument; null is an error naming the argument.
pub fn bytes_arg(env: &JNIEnv, arr: &JByteArray, what: &str) -> Result<Vec<u8>, Error> {
    if arr.is_null() {
        return Err(Error::Codec(format!("{what} is null")));
    }
    env.convert_byte_array(arr)
        .map_err(|e| Error::Codec(format!("could not read {what}: {e}")))
}

/// A new Java `byte[]` holding `data`, as the raw value an entry point returns.
pub fn bytes_result(env: &JNIEnv, data: &[u8]) -> Result<jni::sys::jbyteArray, Error> {
    env.byte_array_from_slice(data)
        .map(JByteArray::into_raw)
        .map_err(|e| {
            Error::State(format!(
                "could not allocate a {}-byte Java array: {e}; give the worker more heap",
                data.len()
            ))
        })
}
