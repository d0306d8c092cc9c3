//! Field checks shared by several kinds: selectors, labels, CIDRs and ports.

use super::*;

impl Builder<'_> {
    pub(in crate::model) fn selector(
        &mut self,
        sel: Option<&LabelSelector>,
        at: At,
        path: &str,
    ) -> Option<Selector> {
        let Some(sel) = sel else {
            return Some(Selector::everything());
        };
        let mut ok = self.check_selector_labels(
            sel.match_labels.as_ref(),
            at,
            &format!("{path}.matchLabels"),
        );
        let mut expressions = Vec::new();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let epath = format!("{path}.matchExpressions[{i}]");
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    let span = at.field(&format!("{epath}.operator"));
                    let d = self.err(
                        Code::InvalidSelector,
                        span,
                        format!("unknown selector operator `{other}`"),
                        "expected In, NotIn, Exists or DoesNotExist",
                    );
                    match crate::util::closest(other, ["In", "NotIn", "Exists", "DoesNotExist"])
                    {
                        Some(s) => d.hints.push(format!("did you mean `{s}`?")),
                        None => d.hints.push(
                            "use `In` or `NotIn` with values, or `Exists` or `DoesNotExist` without; for equality, write `operator: In` and one value".into(),
                        ),
                    }
                    ok = false;
                    continue;
                }
            };
            let bare_key = e.key.split_once(':').map(|(_, k)| k).unwrap_or(&e.key);
            if let Err(why) = check_label_key(bare_key) {
                let span = at.field(&format!("{epath}.key"));
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("selector key `{}` is invalid: {why}", e.key),
                    "invalid key",
                );
                d.hints.push("a key is an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
                ok = false;
            }
            for (vi, v) in e.values.iter().flatten().enumerate() {
                if let Err(why) = check_label_value(v) {
                    let span = at.field(&format!("{epath}.values[{vi}]"));
                    let d = self.err(
                        Code::InvalidLabel,
                        span,
                        format!("selector value `{v}` is invalid: {why}"),
                        "invalid value",
                    );
                    d.hints.push("a label value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; a value with any other character matches no label".into());
                    ok = false;
                }
            }
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values && values.is_empty() {
                let span = at.field(&format!("{epath}.operator"));
                let d = self.err(
                    Code::InvalidSelector,
                    span,
                    format!("operator `{}` needs at least one value", e.operator),
                    "no values",
                );
                d.hints
                    .push("add `values: [...]`, or use Exists / DoesNotExist".into());
                ok = false;
                continue;
            }
            if !needs_values && !values.is_empty() {
                let span = at.field(&format!("{epath}.values"));
                let d = self.err(
                    Code::InvalidSelector,
                    span,
                    format!("operator `{}` takes no values", e.operator),
                    "unexpected values",
                );
                d.hints.push("remove `values`, or use In / NotIn".into());
                ok = false;
                continue;
            }
            expressions.push(Requirement {
                key: e.key.clone(),
                operator,
                values,
            });
        }
        ok.then(|| Selector {
            match_labels: sel.match_labels.clone().unwrap_or_default(),
            expressions,
        })
    }

    /// Selector keys may carry Cilium's source prefix (`k8s:app`), so only values are
    /// checked strictly.
    fn check_selector_labels(
        &mut self,
        labels: Option<&BTreeMap<String, String>>,
        at: At,
        path: &str,
    ) -> bool {
        let mut ok = true;
        for (k, v) in labels.into_iter().flatten() {
            let bare = k.split_once(':').map(|(_, rest)| rest).unwrap_or(k);
            if let Err(why) = check_label_key(bare).and_then(|_| check_label_value(v)) {
                let (key_span, value_span) = at.entry(path, k);
                let span = if check_label_key(bare).is_err() {
                    key_span
                } else {
                    value_span
                };
                let d = self.err(
                    Code::InvalidLabel,
                    span,
                    format!("selector label `{k}: {v}` is invalid: {why}"),
                    "invalid label",
                );
                d.hints.push("label keys and values are at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; such a selector could match no pod".into());
                ok = false;
            }
        }
        ok
    }

    pub(super) fn cidr_with_except(
        &mut self,
        cidr: &str,
        except: &[String],
        at: At,
        path: &str,
    ) -> Option<CidrPeer> {
        let cidr_path =
            if except.is_empty() && !path.ends_with("ipBlock") && !path.contains("CIDRSet") {
                path.to_string()
            } else {
                format!("{path}.cidr")
            };
        let net = self.parse_cidr(cidr, at, &cidr_path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, e) in except.iter().enumerate() {
            let epath = format!("{path}.except[{i}]");
            let Some(ex) = self.parse_cidr(e, at, &epath) else {
                ok = false;
                continue;
            };
            // ValidateIPBlock: every except entry must be a strict subset of the cidr, so
            // an except equal to the cidr (which would leave an empty peer) is refused too.
            if !net.contains(&ex) || ex.prefix_len() <= net.prefix_len() {
                let span = at.field(&epath);
                let block = at.field(&cidr_path);
                let message = if ex == net {
                    format!("except {ex} equals the cidr; it must be a strict subset")
                } else {
                    format!("except {ex} is not inside cidr {net}")
                };
                let d = self.err(Code::CidrExcept, span, message, "outside the block");
                d.secondary.push(crate::diag::Label {
                    span: block,
                    message: "the block".into(),
                });
                d.hints
                    .push("every except entry must be a sub-range of the cidr".into());
                ok = false;
                continue;
            }
            out.push(ex);
        }
        ok.then_some(CidrPeer {
            cidr: net,
            except: out,
        })
    }

    fn parse_cidr(&mut self, text: &str, at: At, path: &str) -> Option<IpNet> {
        // A NetworkPolicy ipBlock needs a prefix length (ValidateIPBlock parses it as a
        // CIDR); Cilium's CIDR fields take a bare address as a host route.
        let ip_block = path.contains("ipBlock");
        // The AdminNetworkPolicy CRD's CEL rule refuses host bits in `networks`; the API
        // server accepts them in an ipBlock (a legacy field) and Cilium masks them, so
        // there they mean the network, with a warning.
        let masked_only = path.contains(".networks[");
        if let Ok(net) = text.parse::<IpNet>() {
            if net.trunc() != net {
                let span = at.field(path);
                if masked_only {
                    let d = self.err(
                        Code::InvalidCidr,
                        span,
                        format!("CIDR `{text}` has host bits set"),
                        "host bits set",
                    );
                    d.hints.push(format!("did you mean `{}`?", net.trunc()));
                    return None;
                }
                let d = self.warn(
                    Code::CidrHostBits,
                    span,
                    format!("CIDR `{text}` has host bits set; it means {}", net.trunc()),
                    "host bits set",
                );
                d.hints
                    .push(format!("write `{}` to say what it means", net.trunc()));
                return Some(net.trunc());
            }
            return Some(net);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            if ip_block {
                let span = at.field(path);
                let d = self.err(
                    Code::InvalidCidr,
                    span,
                    format!("ipBlock CIDR `{text}` has no prefix length"),
                    "no prefix length",
                );
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                d.hints.push(format!(
                    "an ipBlock is a CIDR; for one address write `{ip}/{bits}`"
                ));
                return None;
            }
            return Some(IpNet::from(ip));
        }
        let span = at.field(path);
        let d = self.err(
            Code::InvalidCidr,
            span,
            format!("`{text}` is not a CIDR"),
            "invalid CIDR",
        );
        d.hints
            .push("write an address and a prefix length, such as 10.0.0.0/8 or fd00::/64".into());
        None
    }

    pub(super) fn port_number(&mut self, n: i64, at: At, path: &str) -> Option<u16> {
        // Required port fields that are absent decode as 0.
        if n == 0 && !self.sources.exists(at.span, &FieldPath::parse(path)) {
            self.missing_port(at, path);
            return None;
        }
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let span = at.field(path);
                let d = self.err(
                    Code::PortRange,
                    span,
                    format!("port {n} is out of range"),
                    "out of range",
                );
                d.hints.push("a port is a number from 1 to 65535".into());
                None
            }
        }
    }

    pub(super) fn missing_port(&mut self, at: At, path: &str) {
        let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
        let span = at.field(parent);
        let d = self.err(
            Code::MissingField,
            span,
            format!("`{path}` is missing"),
            format!("no `{field}` here"),
        );
        d.hints
            .push(format!("add `{field}:` with a number from 1 to 65535"));
    }

    pub(super) fn port_name(&mut self, name: &str, at: At, path: &str) -> Option<PortRef> {
        if let Ok(n) = name.parse::<i64>() {
            return self.port_number(n, at, path).map(PortRef::Number);
        }
        match check_port_name(name) {
            Ok(()) => Some(PortRef::Name(name.to_string())),
            Err(why) => {
                let span = at.field(path);
                let d = self.err(
                    Code::InvalidPortName,
                    span,
                    format!("`{name}` is neither a port number nor a valid port name: {why}"),
                    "invalid port",
                );
                d.hints.push("a port name is at most 15 lower-case letters, digits or '-', with at least one letter".into());
                None
            }
        }
    }
}
