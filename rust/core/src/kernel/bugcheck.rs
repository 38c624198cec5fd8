//! Bug check codes: names, and what the four parameters mean for the codes a pool or driver
//! investigation meets most (from Microsoft's public bug check reference).

/// The symbolic name of a bug check code (`0x1000xxxx` codes are the `_M` variants).
pub fn name(code: u32) -> Option<String> {
    if code & 0xFFFF_0000 == 0x1000_0000 {
        return base_name(code & 0xFFFF).map(|n| format!("{n}_M"));
    }
    base_name(code).map(str::to_string)
}

fn base_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0x0A => "IRQL_NOT_LESS_OR_EQUAL",
        0x19 => "BAD_POOL_HEADER",
        0x1A => "MEMORY_MANAGEMENT",
        0x1E => "KMODE_EXCEPTION_NOT_HANDLED",
        0x3B => "SYSTEM_SERVICE_EXCEPTION",
        0x41 => "MUST_SUCCEED_POOL_EMPTY",
        0x4E => "PFN_LIST_CORRUPT",
        0x50 => "PAGE_FAULT_IN_NONPAGED_AREA",
        0x7E => "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
        0x7F => "UNEXPECTED_KERNEL_MODE_TRAP",
        0x9F => "DRIVER_POWER_STATE_FAILURE",
        0xA0 => "INTERNAL_POWER_ERROR",
        0xBE => "ATTEMPTED_WRITE_TO_READONLY_MEMORY",
        0xC1 => "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
        0xC2 => "BAD_POOL_CALLER",
        0xC4 => "DRIVER_VERIFIER_DETECTED_VIOLATION",
        0xC5 => "DRIVER_CORRUPTED_EXPOOL",
        0xC9 => "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
        0xCD => "PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
        0xCE => "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
        0xD1 => "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
        0xD5 => "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL",
        0xD6 => "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
        0xE2 => "MANUALLY_INITIATED_CRASH",
        0xEF => "CRITICAL_PROCESS_DIED",
        0xF4 => "CRITICAL_OBJECT_TERMINATION",
        0xFC => "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY",
        0x101 => "CLOCK_WATCHDOG_TIMEOUT",
        0x116 => "VIDEO_TDR_FAILURE",
        0x119 => "VIDEO_SCHEDULER_INTERNAL_ERROR",
        0x124 => "WHEA_UNCORRECTABLE_ERROR",
        0x133 => "DPC_WATCHDOG_VIOLATION",
        0x139 => "KERNEL_SECURITY_CHECK_FAILURE",
        0x13A => "KERNEL_MODE_HEAP_CORRUPTION",
        0x154 => "UNEXPECTED_STORE_EXCEPTION",
        0x15F => "CONNECTED_STANDBY_WATCHDOG_TIMEOUT_LIVEDUMP",
        0x161 => "LIVE_SYSTEM_DUMP",
        0x1CA => "SYNTHETIC_WATCHDOG_TIMEOUT",
        0xDEADDEAD => "MANUALLY_INITIATED_CRASH1",
        _ => return None,
    })
}

/// What each parameter means. Some codes' meanings depend on parameter 1 (a subtype).
pub fn parameter_meanings(code: u32, params: &[u64; 4]) -> [String; 4] {
    let s = |a: &str, b: &str, c: &str, d: &str| {
        [a.to_string(), b.to_string(), c.to_string(), d.to_string()]
    };
    match code & 0xFFFF {
        0x0A | 0xD1 => s(
            "memory referenced",
            "IRQL at time of reference",
            "0 = read, 1 = write, 8 = execute",
            "address that referenced memory",
        ),
        0x50 => s(
            "memory referenced",
            "0 = read, 1 = write, 2 = execute (Windows 10 1507+)",
            "address that referenced memory (if known)",
            "type of page fault",
        ),
        0x1E => s(
            "exception code",
            "address of the exception",
            "exception parameter 0",
            "exception parameter 1",
        ),
        0x7E => s(
            "exception code",
            "address of the exception",
            "exception record address",
            "context record address",
        ),
        0x3B => s(
            "exception code",
            "address of the instruction that caused the exception",
            "context record address",
            "0",
        ),
        0xEF => s(
            "process object",
            "triggered by destroying the process (0) or thread (1)",
            "reserved",
            "reserved",
        ),
        0x133 => match params[0] {
            0 => s(
                "0: a single DPC or ISR exceeded its time allotment",
                "DPC time count (in ticks)",
                "DPC time allotment (in ticks)",
                "reserved (nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK on 1507+)",
            ),
            1 => s(
                "1: the system cumulatively spent too long at IRQL DISPATCH_LEVEL or above",
                "watchdog time count (in ticks)",
                "reserved",
                "reserved",
            ),
            _ => s("subtype", "reserved", "reserved", "reserved"),
        },
        0x19 => match params[0] {
            0x3 => s(
                "3: the pool freelist is corrupt",
                "the pool entry being checked",
                "the read-back flink freelist value",
                "the read-back blink freelist value",
            ),
            0x20 => s(
                "0x20: a pool block header size is corrupt",
                "the pool entry being checked",
                "the next pool entry",
                "reserved",
            ),
            0x21 => s(
                "0x21: the pool pointer being freed is not in use",
                "the pool pointer",
                "the number of bytes allocated",
                "the corrupted value",
            ),
            _ => s(
                "subtype (see the BAD_POOL_HEADER reference)",
                "pool entry or address",
                "subtype-specific",
                "subtype-specific",
            ),
        },
        0xC2 => match params[0] {
            0x7 => s(
                "7: attempt to free pool which was already freed",
                "pool tag (if any)",
                "pool block header contents",
                "address of the block being freed",
            ),
            0x99 => s(
                "0x99: attempt to free pool with an invalid address",
                "address being freed",
                "0",
                "0",
            ),
            _ => s(
                "subtype (see the BAD_POOL_CALLER reference)",
                "subtype-specific",
                "subtype-specific",
                "subtype-specific",
            ),
        },
        0xC4 => match params[0] {
            0x62 => s(
                "0x62: a driver unloaded without first freeing its pool allocations",
                "name of the driver",
                "verifier data for the driver",
                "number of outstanding allocations",
            ),
            0x60 => s(
                "0x60: the driver did not free all its allocations before unload (pool tracking)",
                "bytes of paged pool allocated",
                "bytes of nonpaged pool allocated",
                "total outstanding allocations",
            ),
            _ => s(
                "Driver Verifier violation type",
                "violation-specific",
                "violation-specific",
                "violation-specific",
            ),
        },
        _ => s("", "", "", ""),
    }
}
