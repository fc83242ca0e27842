//! What the benchmark reads about the machine and the process.

use serde::Serialize;

/// The machine the numbers come from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct System {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// `vm.max_map_count`: memory mappings a process may have.
    pub max_map_count: usize,
}

impl System {
    pub fn read() -> System {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        System {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: kib / 1024.0 / 1024.0,
            max_map_count: std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(65_530),
        }
    }

    /// The largest pool (at most `want` instances) whose memory mappings fit
    /// under `vm.max_map_count` at `per_slot` mappings a slot, and what
    /// limits it.
    pub fn pool_for(&self, want: usize, per_slot: f64) -> (usize, String) {
        // Code, heap and threads besides the pool.
        const BASE: usize = 2_000;
        let used = map_count() + BASE;
        let per_slot = per_slot.max(1.0);
        let fits = (self.max_map_count.saturating_sub(used) as f64 / per_slot) as usize;
        if fits >= want {
            (want, format!("reached the {want} asked for"))
        } else {
            let needed = ((want as f64 * per_slot) as usize + used).next_power_of_two();
            (
                fits,
                format!(
                    "vm.max_map_count = {} allows about {fits} instances at {per_slot:.1} mappings each; \
                     `sysctl -w vm.max_map_count={needed}` (as root) allows {want}",
                    self.max_map_count
                ),
            )
        }
    }
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * page_size() as u64
}

/// This process's page tables, bytes (`VmPTE`): kernel memory, charged to
/// the process's cgroup like its pages but not part of RSS. Every pool slot
/// in use needs a page-table page of its own, because slots lie further
/// apart than the 2 MiB one such page maps.
pub fn page_table_bytes() -> u64 {
    vm_pte_bytes(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

fn vm_pte_bytes(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPTE:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The kernel's page size, bytes.
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// Memory mappings of this process.
pub fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// CPU time this process has used, all threads: (user, system).
pub fn cpu_time() -> (std::time::Duration, std::time::Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Default::default();
        }
        usage.assume_init()
    };
    let d = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    (d(usage.ru_utime), d(usage.ru_stime))
}

/// CPU time per operation, µs, since `before` (from [`cpu_time`]):
/// (user, system), both cores together.
pub fn cpu_per_op_us(before: (std::time::Duration, std::time::Duration), n: usize) -> (f64, f64) {
    let (user, sys) = cpu_time();
    let per = |now: std::time::Duration, then: std::time::Duration| {
        now.saturating_sub(then).as_secs_f64() * 1e6 / n.max(1) as f64
    };
    (per(user, before.0), per(sys, before.1))
}

/// What the kernel charges for one fresh page of anonymous memory, µs: the
/// first write to a page (fault, allocation, zeroing), after a
/// `madvise(MADV_DONTNEED)` like the pool's when a slot is freed. Every page
/// a new instance touches costs this; on a VM it is many times the
/// bare-metal figure, and it sets the floor for spawn and restart.
pub fn fresh_page_us() -> f64 {
    const PAGES: usize = 4096;
    let page = page_size();
    let len = PAGES * page;
    // SAFETY: a private anonymous mapping of our own, written only within
    // its bounds and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 0.0;
        }
        let base = p.cast::<u8>();
        let touch = || {
            for i in 0..PAGES {
                base.add(i * page).write_volatile(1);
            }
        };
        touch();
        libc::madvise(p, len, libc::MADV_DONTNEED);
        let t = std::time::Instant::now();
        touch();
        let us = t.elapsed().as_secs_f64() * 1e6 / PAGES as f64;
        libc::munmap(p, len);
        us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_are_read_from_vm_pte_in_kib() {
        let status = "Name:\twasmvisor\nVmRSS:\t  378408 kB\nVmPTE:\t   44372 kB\nVmSwap:\t0 kB\n";
        assert_eq!(vm_pte_bytes(status), 44_372 * 1024);
        assert_eq!(vm_pte_bytes("Name:\tx\n"), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_page_tables() {
        assert!(page_table_bytes() > 0);
    }
}
