//! CPU clocks: this thread's, another thread's, and the process's.
//!
//! Reading a CPU clock is a system call for another thread (and, on some
//! kernels, for this one too): 0.1–0.6 µs. Fine once per sample or per
//! interval, never per poll.

use std::time::Duration;

/// The CPU time consumed by the calling thread so far.
pub fn thread_now() -> Duration {
    read(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or_default()
}

/// The CPU time consumed by the whole process so far (every thread,
/// including the kernel's io_uring workers of the process).
pub fn process_now() -> Duration {
    read(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or_default()
}

/// The CPU clock of one thread, readable from any thread of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The clock of the calling thread, for others to read.
    pub fn current() -> std::io::Result<ThreadClock> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self() is always a valid thread of this process,
        // and `id` is a valid place for the result.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(ThreadClock(id))
    }

    /// The thread's CPU time so far; `None` once the thread has exited.
    pub fn now(self) -> Option<Duration> {
        read(self.0)
    }
}

fn read(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The process's CPU time as the kernel reports it in `/proc/self/stat`
/// (utime + stime, in clock ticks): what `top` and `ps` show, and what the
/// attributed CPU is checked against.
pub fn proc_stat(pid: u32) -> std::io::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = stat_ticks(&text).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable /proc stat")
    })?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// utime + stime from a `stat` line. The command name may hold spaces and
/// parentheses: fields are counted from the last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The threads of this process with their ids, names and CPU times, from
/// `/proc/self/task` (for the threads no one registered, such as the
/// kernel's io_uring workers and library threads).
pub fn tasks_with_ids() -> Vec<(i32, String, Duration)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
            let ticks = stat_ticks(&stat)?;
            let cpu = Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz);
            Some((tid, name, cpu))
        })
        .collect()
}

/// The process whose command name (`/proc/PID/comm`) is `comm`, if one
/// runs (the lowest pid of those).
pub fn find_process(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .min()
}

/// The machine's CPUs, as `/proc/stat` counts them (the scope of its busy
/// time, whatever this process's affinity or cgroup quota).
pub fn host_cpus() -> u32 {
    std::fs::read_to_string("/proc/stat")
        .map(|t| {
            t.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count() as u32
        })
        .unwrap_or(0)
        .max(1)
}

/// CPU time the whole machine spent busy so far, from `/proc/stat`: user,
/// nice, system, irq and softirq, all CPUs; not idle, I/O wait, or time
/// stolen by the hypervisor for other guests. `None` where unreadable.
pub fn host_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    busy_of(text.lines().next()?)
}

/// The busy time of `/proc/stat`'s aggregate `cpu` line.
fn busy_of(line: &str) -> Option<Duration> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(
        busy.saturating_mul(1_000_000_000) / hz,
    ))
}

/// The process's resident memory in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(stat_ticks(line), Some(10));
        assert_eq!(stat_ticks("42 (x) S 1"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let busy = busy_of("cpu  10 2 3 1000 500 4 5 6 0 0").unwrap();
        assert_eq!(busy, Duration::from_nanos(24 * 1_000_000_000 / hz));
        assert!(host_cpus() >= 1);
        assert_eq!(busy_of("cpu0 1 2 3 4 5 6 7 8"), None);
        assert!(host_busy().is_some());
        assert!(rss_bytes() > 0);
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(find_process(me.trim()).is_some());
        assert_eq!(find_process("no such command, surely"), None);
    }

    #[test]
    fn clocks_advance_with_work() {
        let clock = ThreadClock::current().unwrap();
        let (t0, p0, c0) = (thread_now(), process_now(), clock.now().unwrap());
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_now() > t0);
        assert!(process_now() > p0);
        assert!(clock.now().unwrap() > c0);
        assert!(proc_stat(std::process::id()).is_ok());
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        assert!(
            tasks_with_ids().iter().any(|(tid, _, _)| *tid == me),
            "this thread is listed"
        );
    }
}
