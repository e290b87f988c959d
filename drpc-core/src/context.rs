//! What outgoing calls inherit from the handler they are made in: while a
//! Rust handler runs, a task-local holds its deadline and trace context, and
//! `Conn`/`Pool` calls made inside it take the earlier of their own deadline
//! and the inherited one, and carry the trace on.
//!
//! Task-locals do not cross `tokio::spawn`: wrap a spawned future in
//! [`scope`] with [`current`] to carry the context into it.

use crate::trace::TraceContext;
use std::future::Future;
use tokio::time::Instant;

/// The parts of a handler's call that its outgoing calls inherit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    /// When the handler's call must be done.
    pub deadline: Option<Instant>,
    /// The handler's server span context (the next hop's parent).
    pub trace: Option<TraceContext>,
}

tokio::task_local! {
    static CURRENT: Inherited;
}

/// The context of the handler this task runs for, if it has a deadline or a
/// trace.
pub fn current() -> Option<Inherited> {
    CURRENT.try_with(Inherited::clone).ok()
}

/// Reads the current context without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Inherited>) -> R) -> R {
    let mut f = Some(f);
    match CURRENT.try_with(|c| (f.take().expect("called once"))(Some(c))) {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called yet"))(None),
    }
}

/// Runs `fut` with `inherited` as the context its outgoing calls inherit.
pub async fn scope<F: Future>(inherited: Inherited, fut: F) -> F::Output {
    CURRENT.scope(inherited, fut).await
}
