//! One frame per profile label: 63 distinct functions (slot 0 means "no label" and calls
//! directly).
//!
//! Each is `#[inline(never)]`, does work after the call, so that it is never a tail call and
//! stays on the stack while the poll runs, and differs from the others by a constant, so that
//! function merging cannot fold them into one symbol. The profiler finds the frame in a
//! sample's stack and turns it back into the label (`super::sampler::collect`).

pub(super) type Slot = fn(&mut dyn FnMut());

macro_rules! slot {
    ($name:ident, $n:literal) => {
        #[inline(never)]
        fn $name(f: &mut dyn FnMut()) {
            f();
            std::hint::black_box($n);
        }
    };
}

slot!(obs_profile_slot_1, 1u32);
slot!(obs_profile_slot_2, 2u32);
slot!(obs_profile_slot_3, 3u32);
slot!(obs_profile_slot_4, 4u32);
slot!(obs_profile_slot_5, 5u32);
slot!(obs_profile_slot_6, 6u32);
slot!(obs_profile_slot_7, 7u32);
slot!(obs_profile_slot_8, 8u32);
slot!(obs_profile_slot_9, 9u32);
slot!(obs_profile_slot_10, 10u32);
slot!(obs_profile_slot_11, 11u32);
slot!(obs_profile_slot_12, 12u32);
slot!(obs_profile_slot_13, 13u32);
slot!(obs_profile_slot_14, 14u32);
slot!(obs_profile_slot_15, 15u32);
slot!(obs_profile_slot_16, 16u32);
slot!(obs_profile_slot_17, 17u32);
slot!(obs_profile_slot_18, 18u32);
slot!(obs_profile_slot_19, 19u32);
slot!(obs_profile_slot_20, 20u32);
slot!(obs_profile_slot_21, 21u32);
slot!(obs_profile_slot_22, 22u32);
slot!(obs_profile_slot_23, 23u32);
slot!(obs_profile_slot_24, 24u32);
slot!(obs_profile_slot_25, 25u32);
slot!(obs_profile_slot_26, 26u32);
slot!(obs_profile_slot_27, 27u32);
slot!(obs_profile_slot_28, 28u32);
slot!(obs_profile_slot_29, 29u32);
slot!(obs_profile_slot_30, 30u32);
slot!(obs_profile_slot_31, 31u32);
slot!(obs_profile_slot_32, 32u32);
slot!(obs_profile_slot_33, 33u32);
slot!(obs_profile_slot_34, 34u32);
slot!(obs_profile_slot_35, 35u32);
slot!(obs_profile_slot_36, 36u32);
slot!(obs_profile_slot_37, 37u32);
slot!(obs_profile_slot_38, 38u32);
slot!(obs_profile_slot_39, 39u32);
slot!(obs_profile_slot_40, 40u32);
slot!(obs_profile_slot_41, 41u32);
slot!(obs_profile_slot_42, 42u32);
slot!(obs_profile_slot_43, 43u32);
slot!(obs_profile_slot_44, 44u32);
slot!(obs_profile_slot_45, 45u32);
slot!(obs_profile_slot_46, 46u32);
slot!(obs_profile_slot_47, 47u32);
slot!(obs_profile_slot_48, 48u32);
slot!(obs_profile_slot_49, 49u32);
slot!(obs_profile_slot_50, 50u32);
slot!(obs_profile_slot_51, 51u32);
slot!(obs_profile_slot_52, 52u32);
slot!(obs_profile_slot_53, 53u32);
slot!(obs_profile_slot_54, 54u32);
slot!(obs_profile_slot_55, 55u32);
slot!(obs_profile_slot_56, 56u32);
slot!(obs_profile_slot_57, 57u32);
slot!(obs_profile_slot_58, 58u32);
slot!(obs_profile_slot_59, 59u32);
slot!(obs_profile_slot_60, 60u32);
slot!(obs_profile_slot_61, 61u32);
slot!(obs_profile_slot_62, 62u32);
slot!(obs_profile_slot_63, 63u32);

/// `SLOTS[i]` for slot `i` (index 0 is unused: no label).
pub(super) static SLOTS: [Slot; 64] = [
    obs_profile_slot_1, // never called: slot 0 is no label
    obs_profile_slot_1,
    obs_profile_slot_2,
    obs_profile_slot_3,
    obs_profile_slot_4,
    obs_profile_slot_5,
    obs_profile_slot_6,
    obs_profile_slot_7,
    obs_profile_slot_8,
    obs_profile_slot_9,
    obs_profile_slot_10,
    obs_profile_slot_11,
    obs_profile_slot_12,
    obs_profile_slot_13,
    obs_profile_slot_14,
    obs_profile_slot_15,
    obs_profile_slot_16,
    obs_profile_slot_17,
    obs_profile_slot_18,
    obs_profile_slot_19,
    obs_profile_slot_20,
    obs_profile_slot_21,
    obs_profile_slot_22,
    obs_profile_slot_23,
    obs_profile_slot_24,
    obs_profile_slot_25,
    obs_profile_slot_26,
    obs_profile_slot_27,
    obs_profile_slot_28,
    obs_profile_slot_29,
    obs_profile_slot_30,
    obs_profile_slot_31,
    obs_profile_slot_32,
    obs_profile_slot_33,
    obs_profile_slot_34,
    obs_profile_slot_35,
    obs_profile_slot_36,
    obs_profile_slot_37,
    obs_profile_slot_38,
    obs_profile_slot_39,
    obs_profile_slot_40,
    obs_profile_slot_41,
    obs_profile_slot_42,
    obs_profile_slot_43,
    obs_profile_slot_44,
    obs_profile_slot_45,
    obs_profile_slot_46,
    obs_profile_slot_47,
    obs_profile_slot_48,
    obs_profile_slot_49,
    obs_profile_slot_50,
    obs_profile_slot_51,
    obs_profile_slot_52,
    obs_profile_slot_53,
    obs_profile_slot_54,
    obs_profile_slot_55,
    obs_profile_slot_56,
    obs_profile_slot_57,
    obs_profile_slot_58,
    obs_profile_slot_59,
    obs_profile_slot_60,
    obs_profile_slot_61,
    obs_profile_slot_62,
    obs_profile_slot_63,
];

/// A span id spelled as frames: 16 nested calls, one of 16 functions per hex digit, the most
/// significant digit outermost. The profiler reads the digits back from a sample's stack
/// (`super::span_in_stack`) and labels the sample with the span (Pyroscope's `span_id`), so
/// that a trace's span opens its own flamegraph. Only for sampled spans while profiling is on.
pub(super) struct Spelling<'a> {
    id: u64,
    /// Digits still to spell.
    left: u32,
    f: &'a mut dyn FnMut(),
}

#[inline(always)]
fn spell_next(s: &mut Spelling<'_>) {
    if s.left == 0 {
        return obs_span_digits_end(s);
    }
    s.left -= 1;
    let digit = (s.id >> (4 * s.left)) & 0xF;
    DIGITS[digit as usize](s)
}

/// Runs `f` under the 16 frames spelling `id`.
pub(super) fn spell(id: u64, f: &mut dyn FnMut()) {
    spell_next(&mut Spelling { id, left: 16, f })
}

/// The end of a complete spelling, called by its innermost digit: a sample whose stack has it
/// below sixteen digits names that span (`super::span_in_stack`).
#[inline(never)]
fn obs_span_digits_end(s: &mut Spelling<'_>) {
    (s.f)();
    std::hint::black_box(16u32);
}

macro_rules! digit {
    ($name:ident, $n:literal) => {
        #[inline(never)]
        fn $name(s: &mut Spelling<'_>) {
            spell_next(s);
            std::hint::black_box($n);
        }
    };
}

digit!(obs_span_digit_0, 0u32);
digit!(obs_span_digit_1, 1u32);
digit!(obs_span_digit_2, 2u32);
digit!(obs_span_digit_3, 3u32);
digit!(obs_span_digit_4, 4u32);
digit!(obs_span_digit_5, 5u32);
digit!(obs_span_digit_6, 6u32);
digit!(obs_span_digit_7, 7u32);
digit!(obs_span_digit_8, 8u32);
digit!(obs_span_digit_9, 9u32);
digit!(obs_span_digit_a, 10u32);
digit!(obs_span_digit_b, 11u32);
digit!(obs_span_digit_c, 12u32);
digit!(obs_span_digit_d, 13u32);
digit!(obs_span_digit_e, 14u32);
digit!(obs_span_digit_f, 15u32);

/// `DIGITS[d]` spells the hex digit `d`.
static DIGITS: [fn(&mut Spelling<'_>); 16] = [
    obs_span_digit_0,
    obs_span_digit_1,
    obs_span_digit_2,
    obs_span_digit_3,
    obs_span_digit_4,
    obs_span_digit_5,
    obs_span_digit_6,
    obs_span_digit_7,
    obs_span_digit_8,
    obs_span_digit_9,
    obs_span_digit_a,
    obs_span_digit_b,
    obs_span_digit_c,
    obs_span_digit_d,
    obs_span_digit_e,
    obs_span_digit_f,
];
