//! The card turned hostile (fault injection, [`crate::faults::virtio`]):
//! acts on the card's own side of a virtio device — its rings in the host's
//! ring block, its descriptor and control block in the device page, its
//! doorbell, its handshakes — which the host driver must survive.
//!
//! Each act is logged in the card's kernel log (`... injected: ...`), so a
//! reader of the log sees what the card did next to how the host answered.
//! The card's own drivers are not told: whatever the host does next (a
//! broken ring, a refusal) reaches them as it would a real driver.

use std::time::Instant;

use mic_core::abi::virtio::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VringDesc, avail_entry};
use mic_core::abi::{
    MIC_DP_SIZE, MIC_VIRTIO_RING_ALIGN, VQ_ADDRESS, VQ_NUM, VQ_USED_ADDRESS, VRI_AVAIL_IDX, total_desc_size,
    vring_size,
};
use mic_core::card::CardDevice;
use mic_core::card::vring::DriverQueue;
use mic_core::hw::{MemError, Memory, Mmio};

use super::{CardHw, State, Then, Virtio};
use crate::faults::virtio::{Act, DeviceSel, VirtioFault};

/// How far `vring-jump` moves `avail.idx` past the host.
const JUMP: u16 = 0x8000;
/// Each buffer of `vring-huge`: two of them pass 4 GiB.
const HUGE: u32 = 0x8000_0000;

fn mem_err(e: MemError) -> String {
    format!("ring unreachable: {e}")
}

impl Virtio {
    /// Applies a hostile act. `rng` feeds the garbage.
    pub fn hostile<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        card: &mut CardDevice,
        f: &VirtioFault,
        rng: &mut impl FnMut() -> u64,
        now: Instant,
    ) -> Result<(), String> {
        let Some(sel) = &f.device else {
            // garbage-dp without a device: the whole page.
            let what = garbage(hw, card.dp(), MIC_DP_SIZE, rng).map_err(mem_err)?;
            self.sink
                .klog
                .push((4, format!("mic_card: injected: {what} over the device page")));
            return Ok(());
        };
        let k = self.find(sel).ok_or_else(|| format!("no virtio device {sel}"))?;
        let line = match f.act {
            Act::Loop { vq }
            | Act::Outside { vq }
            | Act::Huge { vq }
            | Act::Jump { vq }
            | Act::Double { vq } => self.ring_act(hw, k, f.act, vq)?,
            Act::DoorbellStorm { count } => {
                let d = &self.devices[k];
                for _ in 0..count {
                    d.vdev.notify(&hw.mmio, &hw.phys);
                }
                format!("rang the host's doorbell {count} times")
            }
            Act::VqconfigChange => self.vqconfig_change(hw, k)?,
            Act::UsedOutside => {
                let d = &mut self.devices[k];
                d.hostile.used_outside = true;
                match d.state {
                    State::Live | State::Activating { .. } => {
                        self.request_reset(hw, card, k, Then::Bind, now);
                    }
                    State::Idle if d.kind.is_some() => {
                        let mut d = self.devices.remove(k);
                        self.bind(hw, &mut d, now);
                        self.devices.insert(k, d);
                    }
                    _ => {
                        d.hostile.used_outside = false;
                        return Err(format!("virtio{} is busy or has no driver", d.index));
                    }
                }
                "virtqueue 0's used ring goes outside card memory at the next probe (now)".to_owned()
            }
            Act::ConfigNoAck => {
                self.devices[k].hostile.no_config_ack = true;
                "config changes and removal requests are no longer acknowledged".to_owned()
            }
            Act::GarbageDp => {
                let d = &self.devices[k];
                let len = total_desc_size(&d.vdev.desc());
                let what = garbage(hw, d.vdev.addr(), len, rng).map_err(mem_err)?;
                format!("{what} over its descriptor and control block")
            }
        };
        let tag = self.devices[k].tag();
        self.sink.klog.push((4, format!("{tag}: injected: {line}")));
        Ok(())
    }

    /// The device `sel` names.
    fn find(&self, sel: &DeviceSel) -> Option<usize> {
        self.devices.iter().position(|d| match sel {
            DeviceSel::Index(i) => d.index == *i,
            DeviceSel::Type(t) => d.vdev.device_type() == *t,
            DeviceSel::Name(n) => d.driver.as_ref().is_some_and(|drv| drv.name() == n),
        })
    }

    /// The acts on one virtqueue's rings; what was done, for the log.
    fn ring_act<M: Mmio, P: Memory>(
        &mut self,
        hw: &CardHw<M, P>,
        k: usize,
        act: Act,
        vq: u8,
    ) -> Result<String, String> {
        let d = &mut self.devices[k];
        let index = d.index;
        if d.state != State::Live {
            return Err(format!("virtio{index} is not running (DRIVER_OK)"));
        }
        let q = d
            .vdev
            .queue(vq)
            .map_err(|_| format!("virtio{index} has no virtqueue {vq}"))?;
        let mem = &hw.phys;
        let num = q.num();
        let mask = num - 1;
        let (desc, avail) = (q.desc_addr(), q.avail_addr());
        let entry = |p: u16| avail + avail_entry(p & mask) as u64;
        // Where the host is: the avail index it published with its last
        // completion (one less than its own if it holds a chain).
        let info = desc + vring_size(num, MIC_VIRTIO_RING_ALIGN) as u64 + VRI_AVAIL_IDX as u64;
        let host = mem.read_u16(info).map_err(mem_err)?;
        let idx = q.avail_idx();
        let pending = idx.wrapping_sub(host);
        let waiting = (1..=num).contains(&pending);
        let line = match act {
            Act::Jump { .. } => {
                let to = host.wrapping_add(JUMP);
                mem.write_u16(avail + 2, to).map_err(mem_err)?;
                format!("vq {vq}: avail index {idx} → {to} (the host is at {host})")
            }
            Act::Double { .. } => {
                let newest = mem.read_u16(entry(idx.wrapping_sub(1))).map_err(mem_err)?;
                if !waiting || !q.head_in_flight(newest) {
                    return Err(format!(
                        "virtio{index} vq {vq}: no chain waits for the host to be submitted twice"
                    ));
                }
                q.offer_again(mem, newest).map_err(|e| e.to_string())?;
                format!("vq {vq}: chain {newest} made available a second time")
            }
            _ => format!("vq {vq}: {}, next for the host", hijack(mem, q, act, host)?),
        };
        mem.write_barrier();
        d.vdev.notify(&hw.mmio, &hw.phys);
        Ok(line)
    }

    /// Rewrites every vqconfig of a running device: twice the size, the
    /// ring 1 MiB away, the used ring at 0.
    fn vqconfig_change<M: Mmio, P: Memory>(&mut self, hw: &CardHw<M, P>, k: usize) -> Result<String, String> {
        let d = &self.devices[k];
        if d.state != State::Live {
            return Err(format!("virtio{} is not running (DRIVER_OK)", d.index));
        }
        let desc = d.vdev.desc();
        for i in 0..usize::from(desc.num_vq) {
            let at = d.vdev.addr() + desc.vq_offset(i) as u64;
            let mem = &hw.phys;
            let num = mem.read_u16(at + VQ_NUM as u64).map_err(mem_err)?;
            let addr = mem.read_u64(at + VQ_ADDRESS as u64).map_err(mem_err)?;
            mem.write_u16(at + VQ_NUM as u64, num.wrapping_mul(2))
                .map_err(mem_err)?;
            mem.write_u64(at + VQ_ADDRESS as u64, addr.wrapping_add(1 << 20))
                .map_err(mem_err)?;
            mem.write_u64(at + VQ_USED_ADDRESS as u64, 0).map_err(mem_err)?;
        }
        d.vdev.notify(&hw.mmio, &hw.phys);
        Ok(format!(
            "{} vqconfigs rewritten (num doubled, ring +1 MiB, used ring 0)",
            desc.num_vq
        ))
    }
}

/// Turns the chain the host fetches next on `q` (any head if none waits)
/// into the `act` one: its descriptors rewritten, every waiting avail entry
/// naming it, and one entry more for a host that holds a chain. `host` is
/// the host's published avail index. What was done, for the log.
fn hijack(mem: &impl Memory, q: &mut DriverQueue, act: Act, host: u16) -> Result<String, String> {
    let num = q.num();
    let mask = num - 1;
    let (desc, avail) = (q.desc_addr(), q.avail_addr());
    let entry = |p: u16| avail + avail_entry(p & mask) as u64;
    let pending = q.avail_idx().wrapping_sub(host);
    let waiting = (1..=num).contains(&pending);
    let head = if waiting {
        mem.read_u16(entry(host)).map_err(mem_err)? & mask
    } else {
        0
    };
    let other = (head + 1) & mask;
    let at = |i: u16| desc + u64::from(i) * VringDesc::SIZE as u64;
    // The chain keeps its direction (device-writable or not).
    let flags = mem.read_u16(at(head) + 12).map_err(mem_err)? & VRING_DESC_F_WRITE;
    let next = flags | VRING_DESC_F_NEXT;
    let (first, second, what) = match act {
        Act::Loop { .. } => {
            let b = |n| VringDesc {
                addr: q.used_addr(),
                len: 16,
                flags: next,
                next: n,
            };
            (
                b(other),
                Some(b(head)),
                format!("descriptor loop {head} → {other} → {head}"),
            )
        }
        Act::Outside { .. } => (
            VringDesc {
                addr: desc,
                len: 16 * u32::from(num),
                flags,
                next: 0,
            },
            None,
            format!("buffer at {desc:#x}, its own descriptor table (host memory)"),
        ),
        _ => {
            let b = |flags, n| VringDesc {
                addr: 0,
                len: HUGE,
                flags,
                next: n,
            };
            (
                b(next, other),
                Some(b(flags, 0)),
                format!("two {HUGE:#x}-byte buffers in chain {head}"),
            )
        }
    };
    mem.write(at(head), &first.to_bytes()).map_err(mem_err)?;
    if let Some(s) = second {
        mem.write(at(other), &s.to_bytes()).map_err(mem_err)?;
    }
    if waiting {
        for p in 0..pending {
            mem.write_u16(entry(host.wrapping_add(p)), head)
                .map_err(mem_err)?;
        }
    }
    if !waiting || pending < num {
        q.offer_again(mem, head).map_err(|e| e.to_string())?;
    }
    Ok(what)
}

/// `len` random bytes at card address `at`; what was written, for the log.
fn garbage<M: Mmio, P: Memory>(
    hw: &CardHw<M, P>,
    at: u64,
    len: usize,
    rng: &mut impl FnMut() -> u64,
) -> Result<String, MemError> {
    let bytes: Vec<u8> = (0..len).map(|_| rng() as u8).collect();
    hw.phys.write(at, &bytes)?;
    Ok(format!("{len} random bytes"))
}
