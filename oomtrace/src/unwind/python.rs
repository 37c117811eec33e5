//! One stack from two walks: the native frames and the Python frames the interpreter was
//! running, spliced where the native chain is in the eval loop.
//!
//! Each native frame of `_PyEval_EvalFrameDefault` ran a run of Python frames: in 3.11+ the
//! innermost ones down to the next frame marked "entry" (Python-to-Python calls stay inside one
//! C-level eval call), before 3.11 exactly one. That run goes right inside (before, innermost
//! first) its eval frame; the eval frame itself stays in the chain. Python frames left over (a
//! native walk cut short, an eval frame not named) go at the outer end, in order.

/// The native frames (innermost first), whether each is an eval-loop frame, whether the call
/// site itself (the frame before them) is one, and the Python frames (innermost first, with
/// their entry marks) → the spliced frames.
pub fn splice(
    native: &[u64],
    is_eval: &[bool],
    site_is_eval: bool,
    python: &[(u64, bool)],
) -> Vec<u64> {
    let mut out = Vec::with_capacity(native.len() + python.len());
    let mut rest = python;
    let mut take_run = |out: &mut Vec<u64>| {
        let end = rest
            .iter()
            .position(|&(_, entry)| entry)
            .map_or(rest.len(), |i| i + 1);
        out.extend(rest[..end].iter().map(|&(t, _)| t));
        rest = &rest[end..];
    };
    if site_is_eval {
        take_run(&mut out);
    }
    for (i, &a) in native.iter().enumerate() {
        if is_eval.get(i).copied().unwrap_or(false) {
            take_run(&mut out);
        }
        out.push(a);
    }
    out.extend(rest.iter().map(|&(t, _)| t));
    out
}

#[cfg(test)]
mod tests {
    use super::splice;

    const P1: u64 = 0x8000_0000_0000_0001;
    const P2: u64 = 0x8000_0000_0000_0002;
    const P3: u64 = 0x8000_0000_0000_0003;

    #[test]
    fn runs_go_inside_their_eval_frames() {
        // malloc's caller, an extension, E1 (runs P1 P2), vector call, E0 (runs P3), main.
        let native = [0x10, 0x20, 0xe1, 0x30, 0xe0, 0x40];
        let eval = [false, false, true, false, true, false];
        let py = [(P1, false), (P2, true), (P3, true)];
        assert_eq!(
            splice(&native, &eval, false, &py),
            vec![0x10, 0x20, P1, P2, 0xe1, 0x30, P3, 0xe0, 0x40]
        );
    }

    #[test]
    fn one_frame_per_eval_call_before_311() {
        let native = [0xe2, 0xe1, 0xe0];
        let py = [(P1, true), (P2, true), (P3, true)];
        assert_eq!(
            splice(&native, &[true; 3], false, &py),
            vec![P1, 0xe2, P2, 0xe1, P3, 0xe0]
        );
    }

    #[test]
    fn call_site_in_the_eval_loop_takes_the_first_run() {
        let py = [(P1, true), (P2, true)];
        assert_eq!(
            splice(&[0xe0, 0x40], &[true, false], true, &py),
            vec![P1, P2, 0xe0, 0x40]
        );
    }

    #[test]
    fn leftovers_go_outermost_and_nothing_is_dropped() {
        // The native walk was cut before the outer eval frame.
        let py = [(P1, true), (P2, false), (P3, true)];
        assert_eq!(
            splice(&[0xe1, 0x30], &[true, false], false, &py),
            vec![P1, 0xe1, 0x30, P2, P3]
        );
        // No eval frame named at all, no Python frames.
        assert_eq!(
            splice(&[0x10], &[false], false, &py),
            vec![0x10, P1, P2, P3]
        );
        assert_eq!(
            splice(&[0x10, 0xe0], &[false, true], false, &[]),
            vec![0x10, 0xe0]
        );
    }
}
