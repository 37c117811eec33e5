//! `--kernel` in a session: attach the kernel-allocation and DRM/TTM probes at the start (with
//! a notice per unavailable group), and put the kernel stacks and probe statuses into the
//! report at the end.

use anyhow::Result;

use crate::kallsyms::Kallsyms;
use crate::model::Model;
use crate::probe::Probes;
use crate::probe::drm::{self, KernelProbe};
use crate::report::Report;
use crate::report::kernel::{LiveKernelSymbols, kernel_stacks};

/// What `--kernel` attached.
pub struct KernelMode {
    /// Every DRM/TTM probe and what became of it.
    pub probes: Vec<KernelProbe>,
}

/// Attaches the kmem/vmalloc tracepoints (an error if the kernel lacks the kmem ones) and
/// tries the DRM/TTM probes; prints one notice per group that is not available.
pub fn start(probes: &mut Probes) -> Result<KernelMode> {
    let mut notices = crate::probe::kernel::attach(probes)?;
    let gpu = drm::attach(probes);
    notices.extend(drm::notices(&gpu));
    for n in notices {
        crate::say!("oomtrace: notice: {n}");
    }
    Ok(KernelMode { probes: gpu })
}

impl KernelMode {
    /// Adds `kernel_stacks` (symbolized with kallsyms, read now) and `kernel_probes`.
    pub fn finish(&self, model: &Model, probes: &Probes, report: &mut Report) {
        let kallsyms = match Kallsyms::load() {
            Ok(k) => Some(k),
            Err(e) => {
                crate::say!("oomtrace: warning: {e:#}");
                None
            }
        };
        let walk = |id: u32| probes.kernel_stack(id);
        let mut src = LiveKernelSymbols {
            walk: &walk,
            kallsyms: kallsyms.as_ref(),
        };
        report.kernel_stacks = Some(kernel_stacks(model, &mut src));
        report.kernel_probes = Some(self.probes.clone());
    }
}
