//! Failure injection: which recipients and messages the sink refuses, and
//! with which replies.
//!
//! Shares are decided independently for every recipient and every message
//! with a fast PRNG (`fastrand`, wyrand) that each worker seeds on its own,
//! so deciding costs a few nanoseconds and touches nothing shared. With a
//! seed the decisions are reproducible for a given order of arrival per
//! worker.

use std::collections::HashMap;

use verdant_receiver::policy::is_refusal;

/// What the sink refuses. Percentages are of all recipients (at `RCPT`)
/// and all messages (at end of data) the sink would otherwise accept;
/// `0.0` injects nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Share of recipients answered with [`Faults::temp_rcpt_reply`].
    pub temp_fail_rcpt: f64,
    /// Share of recipients answered with [`Faults::perm_rcpt_reply`].
    pub perm_fail_rcpt: f64,
    /// Share of messages answered with [`Faults::temp_msg_reply`].
    pub temp_fail_msg: f64,
    /// Share of messages answered with [`Faults::perm_msg_reply`].
    pub perm_fail_msg: f64,
    /// Recipients always refused, each with its own reply; the address is
    /// matched without regard to ASCII case. Checked before the shares.
    pub fail_rcpt: Vec<(String, String)>,
    /// Reply to a recipient picked by [`Faults::temp_fail_rcpt`].
    pub temp_rcpt_reply: String,
    /// Reply to a recipient picked by [`Faults::perm_fail_rcpt`].
    pub perm_rcpt_reply: String,
    /// Reply to a message picked by [`Faults::temp_fail_msg`].
    pub temp_msg_reply: String,
    /// Reply to a message picked by [`Faults::perm_fail_msg`].
    pub perm_msg_reply: String,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            temp_fail_rcpt: 0.0,
            perm_fail_rcpt: 0.0,
            temp_fail_msg: 0.0,
            perm_fail_msg: 0.0,
            fail_rcpt: Vec::new(),
            temp_rcpt_reply: "450 4.2.1 Mailbox busy (injected by verdant sink)".into(),
            perm_rcpt_reply: "550 5.1.1 No such user (injected by verdant sink)".into(),
            temp_msg_reply: "451 4.3.0 Try again later (injected by verdant sink)".into(),
            perm_msg_reply: "554 5.7.1 Message refused (injected by verdant sink)".into(),
        }
    }
}

/// A [`Faults`] setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    /// A percentage outside 0–100, or not a number.
    #[error("{what} must be a percentage from 0 to 100, not {value}")]
    Percentage {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// The temporary and permanent shares add up to more than 100 %.
    #[error("temporary and permanent {what} failures add up to {sum}%, more than 100%")]
    Sum {
        /// `recipient` or `message`.
        what: &'static str,
        /// The sum.
        sum: f64,
    },
    /// A reply that is not a single 4xx or 5xx line.
    #[error("{reply:?} is not a 4xx or 5xx SMTP reply line")]
    Reply {
        /// The reply.
        reply: String,
    },
}

impl Faults {
    /// Checks the percentages and that every reply is a refusal (a single
    /// 4xx/5xx line; see [`verdant_receiver::policy::is_refusal`]).
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (what, value) in [
            ("temp-fail-rcpt", self.temp_fail_rcpt),
            ("perm-fail-rcpt", self.perm_fail_rcpt),
            ("temp-fail-msg", self.temp_fail_msg),
            ("perm-fail-msg", self.perm_fail_msg),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(FaultsError::Percentage { what, value });
            }
        }
        for (what, sum) in [
            ("recipient", self.temp_fail_rcpt + self.perm_fail_rcpt),
            ("message", self.temp_fail_msg + self.perm_fail_msg),
        ] {
            if sum > 100.0 {
                return Err(FaultsError::Sum { what, sum });
            }
        }
        let replies = [
            &self.temp_rcpt_reply,
            &self.perm_rcpt_reply,
            &self.temp_msg_reply,
            &self.perm_msg_reply,
        ];
        for reply in replies
            .into_iter()
            .chain(self.fail_rcpt.iter().map(|(_, r)| r))
        {
            if !is_refusal(reply) {
                return Err(FaultsError::Reply {
                    reply: reply.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether any recipient can be refused (if not, the sink sets no
    /// recipient hook at all and sessions skip the call).
    pub fn refuses_recipients(&self) -> bool {
        self.temp_fail_rcpt > 0.0 || self.perm_fail_rcpt > 0.0 || !self.fail_rcpt.is_empty()
    }
}

/// The class of a refusal, by the first digit of its reply code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// 4xx: the client should try again later.
    Temporary,
    /// 5xx: the client should give up.
    Permanent,
}

impl Class {
    /// The class of a reply that passed [`is_refusal`].
    fn of(reply: &str) -> Class {
        if reply.starts_with('4') {
            Class::Temporary
        } else {
            Class::Permanent
        }
    }
}

/// One worker's decisions: its own PRNG, the settings, the listed
/// recipients by lower-cased address.
pub(crate) struct Injector {
    faults: Faults,
    listed: HashMap<String, String>,
    rng: fastrand::Rng,
}

impl Injector {
    /// Decisions for one worker; `seed` makes them reproducible.
    pub(crate) fn new(faults: Faults, seed: u64) -> Injector {
        let listed = faults
            .fail_rcpt
            .iter()
            .map(|(a, r)| (a.to_ascii_lowercase(), r.clone()))
            .collect();
        Injector {
            faults,
            listed,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Whether to refuse `recipient`, and how.
    pub(crate) fn recipient(&mut self, recipient: &str) -> Option<(Class, String)> {
        if !self.listed.is_empty()
            && let Some(reply) = self.listed.get(&recipient.to_ascii_lowercase())
        {
            return Some((Class::of(reply), reply.clone()));
        }
        let f = &self.faults;
        let class = pick(&mut self.rng, f.temp_fail_rcpt, f.perm_fail_rcpt)?;
        let reply = match class {
            Class::Temporary => &f.temp_rcpt_reply,
            Class::Permanent => &f.perm_rcpt_reply,
        };
        Some((class, reply.clone()))
    }

    /// Whether to refuse a complete message, and how.
    pub(crate) fn message(&mut self) -> Option<(Class, String)> {
        let f = &self.faults;
        let class = pick(&mut self.rng, f.temp_fail_msg, f.perm_fail_msg)?;
        let reply = match class {
            Class::Temporary => &f.temp_msg_reply,
            Class::Permanent => &f.perm_msg_reply,
        };
        Some((class, reply.clone()))
    }
}

/// One draw in [0, 100): below `perm` is permanent, the next `temp` is
/// temporary. No draw at all when nothing is injected, so that the stream
/// of decisions of one kind does not depend on the other kind's settings.
fn pick(rng: &mut fastrand::Rng, temp: f64, perm: f64) -> Option<Class> {
    if temp <= 0.0 && perm <= 0.0 {
        return None;
    }
    let r = rng.f64() * 100.0;
    if r < perm {
        Some(Class::Permanent)
    } else if r < perm + temp {
        Some(Class::Temporary)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(Faults::default().validate(), Ok(()));
        let bad = [
            Faults {
                temp_fail_rcpt: 101.0,
                ..Default::default()
            },
            Faults {
                perm_fail_msg: -1.0,
                ..Default::default()
            },
            Faults {
                perm_fail_msg: f64::NAN,
                ..Default::default()
            },
            Faults {
                temp_fail_msg: 60.0,
                perm_fail_msg: 50.0,
                ..Default::default()
            },
            Faults {
                fail_rcpt: vec![("a@b".into(), "250 ok".into())],
                ..Default::default()
            },
        ];
        for f in bad {
            assert!(f.validate().is_err(), "{f:?}");
        }
    }

    #[test]
    fn shares_are_close_to_the_settings_and_reproducible() {
        let faults = Faults {
            temp_fail_rcpt: 10.0,
            perm_fail_rcpt: 20.0,
            temp_fail_msg: 100.0,
            ..Default::default()
        };
        let mut a = Injector::new(faults.clone(), 42);
        let mut b = Injector::new(faults, 42);
        let (mut temp, mut perm) = (0, 0);
        for _ in 0..100_000 {
            let d = a.recipient("x@y.test");
            assert_eq!(d, b.recipient("x@y.test"));
            match d.map(|(c, _)| c) {
                Some(Class::Temporary) => temp += 1,
                Some(Class::Permanent) => perm += 1,
                None => {}
            }
        }
        assert!((9_000..11_000).contains(&temp), "{temp}");
        assert!((19_000..21_000).contains(&perm), "{perm}");
        for _ in 0..1000 {
            assert_eq!(a.message().unwrap().0, Class::Temporary);
        }
    }

    #[test]
    fn listed_recipients_get_their_reply() {
        let mut i = Injector::new(
            Faults {
                fail_rcpt: vec![
                    ("Bad@X.test".into(), "550 5.1.1 no such user".into()),
                    ("later@x.test".into(), "452 4.2.2 full".into()),
                ],
                ..Default::default()
            },
            1,
        );
        assert_eq!(
            i.recipient("bad@x.TEST"),
            Some((Class::Permanent, "550 5.1.1 no such user".into()))
        );
        assert_eq!(
            i.recipient("later@x.test"),
            Some((Class::Temporary, "452 4.2.2 full".into()))
        );
        assert_eq!(i.recipient("good@x.test"), None);
        assert_eq!(i.message(), None);
    }
}
