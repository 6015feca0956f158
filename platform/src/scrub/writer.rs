//! Where scrubbing is applied on the way out: the log writer (whole lines, before stderr) and
//! Sentry's `before_send` / `before_breadcrumb` hooks.

use std::fmt;
use std::io::{self, Write};

use sentry::protocol::{Breadcrumb, Event};
use tracing_subscriber::fmt::MakeWriter;

use super::{global, Scrubber};

// Logs.
// ---------------------------------------------------------------------------------------------

/// Beyond this many bytes without a newline, pending output is scrubbed and written anyway, so
/// a writer that never ends its line cannot grow without bound.
const MAX_PENDING: usize = 1 << 20;

/// A writer that scrubs whole lines before handing them to `W`.
///
/// Bytes are held until a newline (or [`Write::flush`], or drop), so a secret split across
/// several `write` calls is still seen whole. tracing-subscriber formats an event into one
/// buffer ending in `\n` and writes it at once: that common case goes straight through, with
/// no copy when the line holds nothing to mask.
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    /// `None`: [`global`], looked up at each write (so [`install`] takes effect at once).
    scrubber: Option<Scrubber>,
}

impl<W: Write> ScrubbingWriter<W> {
    /// Scrubs with [`global`].
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            scrubber: None,
        }
    }

    /// Scrubs with `scrubber`.
    pub fn with_scrubber(inner: W, scrubber: Scrubber) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            scrubber: Some(scrubber),
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let scrubber = self.scrubber.as_ref().unwrap_or_else(|| global());
        emit(&mut self.inner, scrubber, &pending)
    }
}

/// Scrubs `bytes` (UTF-8; anything else is decoded lossily) and writes the result.
fn emit<W: Write>(inner: &mut W, scrubber: &Scrubber, bytes: &[u8]) -> io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(text) => inner.write_all(scrubber.scrub(text).as_bytes()),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            inner.write_all(scrubber.scrub(&text).as_bytes())
        }
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let scrubber = self.scrubber.as_ref().unwrap_or_else(|| global());
        if self.pending.is_empty() && buf.last() == Some(&b'\n') {
            emit(&mut self.inner, scrubber, buf)?;
            return Ok(buf.len());
        }
        let old_len = self.pending.len();
        self.pending.extend_from_slice(buf);
        let newline = buf.iter().rposition(|&b| b == b'\n');
        if let Some(pos) = newline {
            let rest = self.pending.split_off(old_len + pos + 1);
            let lines = std::mem::replace(&mut self.pending, rest);
            emit(&mut self.inner, scrubber, &lines)?;
        } else if self.pending.len() > MAX_PENDING {
            let all = std::mem::take(&mut self.pending);
            emit(&mut self.inner, scrubber, &all)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

impl<W: Write> fmt::Debug for ScrubbingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubbingWriter")
            .field("pending_bytes", &self.pending.len())
            .field("scrubber", &self.scrubber)
            .finish_non_exhaustive()
    }
}

/// A tracing-subscriber [`MakeWriter`] whose writers scrub each line before it reaches the
/// writer made by `M`.
#[derive(Debug, Clone)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
    scrubber: Option<Scrubber>,
}

impl<M> ScrubbingMakeWriter<M> {
    /// Wraps `inner`, scrubbing with [`global`].
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            scrubber: None,
        }
    }

    /// Wraps `inner`, scrubbing with `scrubber`.
    pub fn with_scrubber(inner: M, scrubber: Scrubber) -> Self {
        Self {
            inner,
            scrubber: Some(scrubber),
        }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingMakeWriter<M> {
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter {
            inner: self.inner.make_writer(),
            pending: Vec::new(),
            scrubber: self.scrubber.clone(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingWriter {
            inner: self.inner.make_writer_for(meta),
            pending: Vec::new(),
            scrubber: self.scrubber.clone(),
        }
    }
}

/// The log writer: stderr, every line scrubbed with [`global`]. Use it as
/// `fmt::layer().json().with_writer(scrub::scrubbing_stderr())`.
pub fn scrubbing_stderr() -> ScrubbingMakeWriter<fn() -> io::Stderr> {
    ScrubbingMakeWriter::new(io::stderr)
}

// ---------------------------------------------------------------------------------------------
// Sentry.
// ---------------------------------------------------------------------------------------------

/// Sentry's `before_send`: scrubs the event with [`global`] (see [`Scrubber::scrub_event`]) and
/// always sends it. Use it as
/// `ClientOptions { before_send: Some(Arc::new(scrub::scrub_sentry_event)), .. }`.
pub fn scrub_sentry_event(mut event: Event<'static>) -> Option<Event<'static>> {
    global().scrub_event(&mut event);
    Some(event)
}

/// Sentry's `before_breadcrumb`: scrubs the breadcrumb with [`global`] and keeps it.
pub fn scrub_sentry_breadcrumb(mut crumb: Breadcrumb) -> Option<Breadcrumb> {
    global().scrub_breadcrumb(&mut crumb);
    Some(crumb)
}
