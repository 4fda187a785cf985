//! The floor of fan-out: what the kernel charges to write one frame to one
//! client. F-byte frames are written round-robin, one `write` each, to N
//! loopback TCP sockets whose peers are drained by another thread (put it on
//! another core). The number is the writing thread's own CPU time
//! (`/proc/thread-self/schedstat`, nanoseconds on CPU) per million frames:
//! nothing the relay does per frame can cost less than this, so fan-out
//! figures in docs/BENCHMARKS.md are also given as a multiple of it.
//!
//! A second pass writes each frame with `writev` of two slices (a 2-byte
//! WebSocket header and the payload), to show the price of a gather; the
//! relay's writer avoids it by building the header in room kept before the
//! payload and writing once.
//!
//! With FLOOR_PACE_HZ set, one *paced* pass instead: bursts of FLOOR_BURST
//! frames (to that many consecutive sockets) FLOOR_PACE_HZ times a second,
//! the writer sleeping between them — the arrival pattern of a relay below
//! saturation, which writes a burst per batch of changes and sleeps, its
//! clients' readers sleeping too. A write that wakes a sleeping reader costs
//! the kernel more than back-to-back writes to busy ones (about twice on
//! the machine of docs/BENCHMARKS.md), so a relay's CPU per frame is
//! compared with the paced floor at its own bursts (`scripts/bench-fanout.sh`
//! reads them from its `tickrelay_fanout_rounds_total`).
//!
//! Run: `cargo bench --bench floor` (settings: FLOOR_SOCKETS, default 2000;
//! FLOOR_BYTES, default 150; FLOOR_ROUNDS, default 500: frames written are
//! rounds × sockets; FLOOR_PACE_HZ and FLOOR_BURST, default off;
//! FLOOR_CUE=udp: each burst woken by a datagram from the reader's core
//! instead of a timer; FLOOR_WRITER_CPU and FLOOR_READER_CPU, default
//! unpinned). Do not pin the whole process to one core: the drainer must
//! run beside the writer, whose CPU time is counted alone. To compare with a relay pinned to core 0 and
//! its clients on core 1, pin the writer and the drainer the same way
//! (FLOOR_WRITER_CPU=0 FLOOR_READER_CPU=1): left to itself the kernel often
//! runs the drainer on the writer's core, where waking it costs less than
//! waking a reader on another core (about 5% of the paced floor here).

use std::io::{ErrorKind, IoSlice, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This thread's CPU time so far, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Pins the calling thread to core `FLOOR_{which}_CPU`, if set (with
/// `taskset`, by the thread's id).
fn pin(which: &str) {
    let Ok(cpu) = std::env::var(format!("FLOOR_{which}_CPU")) else {
        return;
    };
    let tid = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = tid.file_name().unwrap().to_string_lossy().into_owned();
    let ok = std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu, &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset -p -c {cpu} {tid} failed");
}

/// The bursts' cues: a thread (on the reader's core, FLOOR_READER_CPU)
/// sends `count` one-byte datagrams to the returned socket, `hz` a second
/// on an absolute schedule, as a feed's datagrams wake a relay: the
/// relay's wake-up per batch, from another core. Measured, it costs the
/// writer about what a timer's does (docs/BENCHMARKS.md).
fn cues(hz: f64, count: usize) -> (UdpSocket, std::thread::JoinHandle<()>) {
    let cue = UdpSocket::bind("127.0.0.1:0").expect("bind the cue socket");
    cue.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let to = cue.local_addr().unwrap();
    let pacer = std::thread::spawn(move || {
        pin("READER");
        let out = UdpSocket::bind("127.0.0.1:0").expect("bind the pacer");
        let period = Duration::from_secs_f64(1.0 / hz);
        let mut due = Instant::now();
        for _ in 0..count {
            due += period;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let _ = out.send_to(&[1], to);
        }
    });
    (cue, pacer)
}

struct Pass {
    frames: u64,
    would_block: u64,
    cpu_ns: u64,
    wall_ns: u64,
}

impl Pass {
    fn report(&self, name: &str, bytes: usize, sockets: usize) {
        let per_frame_us = self.cpu_ns as f64 / self.frames.max(1) as f64 / 1e3;
        println!(
            "floor/{name}: {sockets} sockets, {bytes}-byte frames: {frames} frames, \
             {cpu:.3} CPU-s per M frames ({per_frame_us:.2} µs/frame), \
             {rate:.0} frames/s wall, {wb} would-block",
            frames = self.frames,
            cpu = self.cpu_ns as f64 / 1e9 / (self.frames.max(1) as f64 / 1e6),
            rate = self.frames as f64 / (self.wall_ns as f64 / 1e9),
            wb = self.would_block,
        );
    }
}

fn run(writers: &mut [TcpStream], frame: &[u8], rounds: usize, gather: bool) -> Pass {
    let header = [frame[0], frame[1]];
    let mut would_block = 0;
    let mut frames = 0;
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    for _ in 0..rounds {
        for w in writers.iter_mut() {
            let r = if gather {
                w.write_vectored(&[IoSlice::new(&header), IoSlice::new(&frame[2..])])
            } else {
                w.write(frame)
            };
            match r {
                Ok(_) => frames += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => would_block += 1,
                Err(e) => panic!("write: {e}"),
            }
        }
    }
    Pass {
        frames,
        would_block,
        cpu_ns: thread_cpu_ns() - cpu,
        wall_ns: wall.elapsed().as_nanos() as u64,
    }
}

/// `frames` frames in bursts of `burst` (consecutive sockets, round-robin),
/// `hz` bursts a second on an absolute schedule: a late burst is not made
/// up by sleeping less later, only by not sleeping. With `cue`, each burst
/// waits for a datagram on it instead of a timer (see [`cues`]).
fn paced(
    writers: &mut [TcpStream],
    frame: &[u8],
    frames: usize,
    burst: usize,
    hz: f64,
    cue: Option<&UdpSocket>,
) -> Pass {
    let burst = burst.clamp(1, writers.len());
    let period = Duration::from_secs_f64(1.0 / hz);
    let mut would_block = 0;
    let mut written = 0;
    let mut next = 0;
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    let mut due = wall;
    let mut attempts = 0;
    while attempts < frames {
        for _ in 0..burst.min(frames - attempts) {
            match writers[next].write(frame) {
                Ok(_) => written += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => would_block += 1,
                Err(e) => panic!("write: {e}"),
            }
            next = (next + 1) % writers.len();
            attempts += 1;
        }
        if let Some(cue) = cue {
            // A lost cue (none on loopback) only makes that burst late.
            let _ = cue.recv(&mut [0u8; 8]);
            continue;
        }
        due += period;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    Pass {
        frames: written,
        would_block,
        cpu_ns: thread_cpu_ns() - cpu,
        wall_ns: wall.elapsed().as_nanos() as u64,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the arguments.
    let sockets = setting("FLOOR_SOCKETS", 2000);
    let bytes = setting("FLOOR_BYTES", 150).max(4);
    let rounds = setting("FLOOR_ROUNDS", 500);

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let mut writers = Vec::with_capacity(sockets);
    let mut readers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let w = TcpStream::connect(addr).expect("connect");
        let (r, _) = listener.accept().expect("accept");
        w.set_nodelay(true).unwrap();
        w.set_nonblocking(true).unwrap();
        r.set_nonblocking(true).unwrap();
        writers.push(w);
        readers.push(r);
    }

    // The peers: every socket read until it closes, on one other thread.
    let stop = Arc::new(AtomicBool::new(false));
    let drain_stop = stop.clone();
    let drainer = std::thread::spawn(move || {
        pin("READER");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::with_capacity(readers.len());
            for r in readers {
                let r = tokio::net::TcpStream::from_std(r).unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        if r.readable().await.is_err() {
                            return;
                        }
                        match r.try_read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(_) => return,
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        drain_stop.store(true, Ordering::Relaxed);
    });

    pin("WRITER");
    let mut frame = vec![b'x'; bytes];
    frame[0] = 0x81;
    frame[1] = (bytes - 2).min(125) as u8;
    // Warm up: socket buffers and caches.
    run(&mut writers, &frame, rounds / 10 + 1, false);
    let pace_hz = std::env::var("FLOOR_PACE_HZ")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|hz| *hz > 0.0);
    if let Some(hz) = pace_hz {
        let burst = setting("FLOOR_BURST", sockets);
        let frames = rounds * sockets;
        let cued = std::env::var("FLOOR_CUE").is_ok_and(|v| v == "udp");
        let (cue, pacer) = cued
            .then(|| cues(hz, frames.div_ceil(burst.clamp(1, sockets))))
            .unzip();
        let pass = paced(&mut writers, &frame, frames, burst, hz, cue.as_ref());
        pass.report("paced", bytes, sockets);
        let by = if cued { "a datagram" } else { "a timer" };
        println!("floor/paced: {hz:.1} bursts/s of {burst} frames, each woken by {by}");
        if let Some(pacer) = pacer {
            pacer.join().unwrap();
        }
        drop(writers);
        drainer.join().unwrap();
        return;
    }
    let write = run(&mut writers, &frame, rounds, false);
    write.report("write", bytes, sockets);
    let writev = run(&mut writers, &frame, rounds, true);
    writev.report("writev", bytes, sockets);
    drop(writers);
    drainer.join().unwrap();
    assert!(stop.load(Ordering::Relaxed));
}
