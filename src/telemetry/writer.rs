//! Where log lines go: every thread appends its formatted line to one shared buffer, and one
//! writer thread writes the buffer out in batches, at most [`FLUSH_EVERY`] after its first line
//! arrived (sooner once it holds [`FLUSH_AT`] bytes).
//!
//! Why not `tracing-appender`'s non-blocking writer (used before): it hands each line to its
//! thread through a channel, so a busy gateway woke that thread and wrote to standard error
//! once every line or two (perf: a fifth of a warm score's CPU went to logging, the wake-ups a
//! good part of it). Here a line costs the logging thread one uncontended lock and a copy; the
//! writer wakes once per batch, and only when there is something to write (an idle gateway
//! wakes nothing).
//!
//! Never lossy: once [`LIMIT`] bytes wait, a logging thread waits for the writer rather than
//! drop its line. Lines keep the order in which they were appended. [`LogGuard`](super::LogGuard)
//! stops the thread and writes whatever is left.

use parking_lot::{Condvar, Mutex};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest time a line waits in the buffer before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written at once.
pub const FLUSH_AT: usize = 256 * 1024;
/// A buffer this full makes logging threads wait for the writer.
pub const LIMIT: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits on it: lines arrived in an empty buffer, the buffer is full, or stop.
    wake: Condvar,
    /// Logging threads wait on it while the buffer is at its limit.
    room: Condvar,
}

/// The `MakeWriter` of the subscriber: cloned freely, each clone appends to the same buffer.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every line appended before.
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread (named `thread_name`) writing to `sink`.
    pub fn spawn<W: Write + Send + 'static>(
        sink: W,
        thread_name: &str,
    ) -> std::io::Result<(Self, WriterGuard)> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(thread_name.to_owned())
                .spawn(move || write_batches(&shared, sink))?
        };
        Ok((
            Self {
                shared: shared.clone(),
            },
            WriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.shared.state.lock();
        while state.buffer.len() >= LIMIT && !state.stopping {
            self.shared.room.wait(&mut state);
        }
        if state.stopping {
            // The writer is gone or going: write the line ourselves rather than lose it.
            drop(state);
            let _ = std::io::stderr().write_all(line);
            return;
        }
        let was_empty = state.buffer.is_empty();
        let before = state.buffer.len();
        state.buffer.extend_from_slice(line);
        // Wake the writer for the first line of a batch and when the buffer fills up; any other
        // line finds it already counting down to its flush.
        if was_empty || (before < FLUSH_AT && state.buffer.len() >= FLUSH_AT) {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: waits for a first line, gives the batch [`FLUSH_EVERY`] (or until
/// [`FLUSH_AT`] bytes) to fill, writes it outside the lock, and so on until stopped.
fn write_batches<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    let mut state = shared.state.lock();
    loop {
        while state.buffer.is_empty() && !state.stopping {
            shared.wake.wait(&mut state);
        }
        let deadline = Instant::now() + FLUSH_EVERY;
        while state.buffer.len() < FLUSH_AT && !state.stopping {
            if shared.wake.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        std::mem::swap(&mut state.buffer, &mut batch);
        let stopping = state.stopping;
        shared.room.notify_all();
        parking_lot::MutexGuard::unlocked(&mut state, || {
            // Standard error that cannot be written to has nowhere to report it either.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            // A burst's buffer is not kept for the quiet that follows.
            if batch.capacity() > FLUSH_AT * 2 {
                batch = Vec::new();
            }
        });
        if stopping && state.buffer.is_empty() {
            return;
        }
    }
}

impl std::io::Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.append(line);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'writer self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads back, counting its writes.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().extend_from_slice(data);
            *self.writes.lock() += 1;
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_in_few_writes_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::spawn(sink.clone(), "test-log").expect("thread");
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for line in 0..5_000 {
                        writer
                            .write_all(format!("t{thread} l{line}\n").as_bytes())
                            .expect("append");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("joined");
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for thread in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|line| line.starts_with(&format!("t{thread} ")))
                .collect();
            let expected: Vec<String> = (0..5_000).map(|l| format!("t{thread} l{l}")).collect();
            assert_eq!(own, expected, "thread {thread}'s lines in order, none lost");
        }
        // Batches, not a write per line (each batch is one write_all; a large one may be
        // split by the sink, never into one write per line).
        assert!(*sink.writes.lock() < 2_000, "{} writes", sink.writes.lock());
    }

    #[test]
    fn a_lone_line_is_written_without_stopping_the_writer() {
        let sink = Sink::default();
        let (mut writer, _guard) = BatchWriter::spawn(sink.clone(), "test-log").expect("thread");
        writer.write_all(b"hello\n").expect("append");
        // Await the writer (bounded): it writes within FLUSH_EVERY of the line.
        let started = Instant::now();
        while sink.bytes.lock().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.bytes.lock().as_slice(), b"hello\n");
    }

    #[test]
    fn a_full_buffer_makes_the_logging_thread_wait_instead_of_dropping_lines() {
        /// A sink that holds the writer until released.
        struct Gate {
            open: Arc<(Mutex<bool>, Condvar)>,
            bytes: Arc<Mutex<usize>>,
        }
        impl Write for Gate {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                let (lock, opened) = &*self.open;
                let mut open = lock.lock();
                while !*open {
                    opened.wait(&mut open);
                }
                *self.bytes.lock() += data.len();
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let bytes = Arc::new(Mutex::new(0));
        let gate = Gate {
            open: open.clone(),
            bytes: bytes.clone(),
        };
        let (writer, guard) = BatchWriter::spawn(gate, "test-log").expect("thread");
        let line = vec![b'x'; 1024];
        let total_lines = (LIMIT / line.len()) * 3;
        let appended = Arc::new(Mutex::new(0usize));
        let producer = {
            let (mut writer, appended, line) = (writer.clone(), appended.clone(), line.clone());
            std::thread::spawn(move || {
                for _ in 0..total_lines {
                    writer.write_all(&line).expect("append");
                    *appended.lock() += 1;
                }
            })
        };
        // With the sink held, the producer gets at most the limit (plus the batch the writer
        // took) into memory, then waits.
        let started = Instant::now();
        loop {
            let waiting = writer.shared.state.lock().buffer.len() >= LIMIT;
            if waiting {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never filled");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(*appended.lock() < total_lines, "the producer waits");
        let (lock, opened) = &*open;
        *lock.lock() = true;
        opened.notify_all();
        producer.join().expect("joined");
        drop(guard);
        assert_eq!(*bytes.lock(), total_lines * line.len(), "no line lost");
    }
}
