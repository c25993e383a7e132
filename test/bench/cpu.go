package bench

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU time per message, recorded for every load phase: on this machine the
// two cores are shared by the load generator, the simulators, the gateway
// (all in this process) and redis-server, so the CPU a phase used per
// delivered message is what its rate is made of once both cores are busy,
// and it is steadier than the rate on a shared VM. Relayed minus direct is
// the gateway's own cost per message (plus redis-server's, shown apart).

// ProcessCPU is the user+system CPU time this process has used so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is the unit of /proc/PID/stat's utime and stime (USER_HZ,
// 100 on Linux whatever the kernel's HZ).
const clockTick = 10 * time.Millisecond

// PidCPU is the user+system CPU time process pid has used so far, from
// /proc/PID/stat; 0 when pid is 0 or it cannot be read.
func PidCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return statCPU(string(b))
}

// statCPU reads utime+stime (fields 14 and 15) of a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may hold spaces, so the
// fields are counted after its closing parenthesis.
func statCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * clockTick
}

// perMsg is d per message in microseconds; 0 when n is 0.
func perMsg(d time.Duration, n int) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}
