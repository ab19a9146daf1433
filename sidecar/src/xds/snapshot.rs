//! Resource types, and the snapshot of one route set: translated, versioned
//! by content, with the secrets to mask.

use super::*;

/// The resource types served, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Clusters,
    Endpoints,
    /// The HTTPS listener's certificates (SDS): before the listener that
    /// names them.
    Secrets,
    Listeners,
    Routes,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Clusters,
        Kind::Endpoints,
        Kind::Secrets,
        Kind::Listeners,
        Kind::Routes,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Clusters => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Secrets => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            Kind::Listeners => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Routes => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name for logs and the status.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clusters => "clusters",
            Kind::Endpoints => "endpoints",
            Kind::Secrets => "secrets",
            Kind::Listeners => "listeners",
            Kind::Routes => "routes",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// Listeners and clusters are asked for as a whole (wildcard).
    pub(super) fn wildcard(self) -> bool {
        matches!(self, Kind::Clusters | Kind::Listeners)
    }
}

/// The resources of one type, by name, and their version.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSnapshot {
    pub version: String,
    pub resources: Vec<(String, Any)>,
    /// Each resource's own version (the first 16 hex digits of its
    /// digest), in the order of `resources`: what incremental (delta) xDS
    /// compares with what Envoy has.
    pub resource_versions: Vec<String>,
}

/// Everything served for one route set.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub(super) types: [TypeSnapshot; 5],
    /// Secret values of the plugin configs, masked in NACK messages.
    pub(super) secrets: Arc<Vec<String>>,
}

/// One resource as served: its name, packed, and the digest of its
/// canonical bytes (what its type's version is made of).
#[derive(Debug, Clone)]
struct Encoded {
    name: String,
    any: Any,
    digest: [u8; 32],
}

impl Encoded {
    /// A resource whose encoding is canonical (no maps of more than one
    /// entry): hashed as packed.
    fn packed<M: prost::Name>(name: String, m: &M) -> Encoded {
        let any = to_any(m);
        let digest = Sha256::digest(&any.value).into();
        Encoded { name, any, digest }
    }
}

/// The upstream cluster and endpoints of each route, encoded, kept from
/// one snapshot to the next: a route that is the same `Arc<RouteSpec>` in
/// the next table (unchanged, and nothing it names changed) is not
/// translated, encoded or hashed again.
///
/// Likewise each (uri, route) pair's Envoy routes, encoded as they go into
/// a virtual host (the `routes` field, a repeated message: encodings
/// concatenate), with the digest of their canonical bytes: the route
/// configuration is assembled from them, so a write costs the encoding of
/// what it changed, not of 10,000 routes. (Not for routes with a
/// back-channel logout path: their sink route depends on the other pairs
/// of the virtual host; they are made at every build.)
#[derive(Debug, Default)]
pub struct TranslationCache {
    pub(super) routes: std::collections::HashMap<String, (Arc<RouteSpec>, Arc<RouteUpstream>)>,
    pub(super) entries: EntryCache,
}

/// (route id, uri index) → the route and its encoded Envoy routes.
type EntryCache = std::collections::HashMap<(String, usize), (Arc<RouteSpec>, Arc<EncodedEntry>)>;

#[derive(Debug)]
pub(super) struct EncodedEntry {
    /// `VirtualHost.routes` entries: tag, length, `Route`, for each.
    bytes: Vec<u8>,
    digest: [u8; 32],
}

impl EncodedEntry {
    fn new(routes: Vec<Route>) -> EncodedEntry {
        let mut bytes = Vec::new();
        for r in &routes {
            prost::encoding::message::encode(VIRTUAL_HOST_ROUTES, r, &mut bytes);
        }
        let mut one = RouteConfiguration {
            virtual_hosts: vec![VirtualHost {
                routes,
                ..Default::default()
            }],
            ..Default::default()
        };
        let canonical = canonical_route_config_in_place(&mut one);
        EncodedEntry {
            bytes,
            digest: Sha256::digest(&canonical).into(),
        }
    }
}

/// Field numbers of `VirtualHost.routes` and
/// `RouteConfiguration.virtual_hosts`.
const VIRTUAL_HOST_ROUTES: u32 = 3;
const ROUTE_CONFIG_VIRTUAL_HOSTS: u32 = 2;

/// The route configuration of `specs`, as [`translate::translate`](crate::translate::translate) makes it, encoded
/// from the pairs kept in `cache` (those of this table are left there);
/// and whether it has back-channel sink routes.
fn route_config_cached(
    table: &RouteTable,
    settings: &ProxySettings,
    cache: &mut TranslationCache,
) -> (Encoded, bool) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let shared: std::collections::HashMap<&str, &Arc<RouteSpec>> =
        table.enabled_shared().map(|s| (s.id.as_str(), s)).collect();
    let specs: Vec<&RouteSpec> = table.enabled().collect();
    let header = route_config_header();
    let mut value = header.encode_to_vec();
    let mut h = Sha256::new();
    put(&mut h, &value);
    let mut kept = EntryCache::with_capacity(cache.entries.len());
    let mut sinks = false;
    for vh in route_layout(&specs) {
        let vh_header = virtual_host_header(&vh).encode_to_vec();
        h.update(b"v");
        put(&mut h, &vh_header);
        let mut bytes = vh_header;
        let mut sink_done = BTreeSet::new();
        for e in &vh.entries {
            if settings.backchannel_sink.is_some() && has_backchannel_path(e.spec) {
                let (routes, added) = entry_routes(e, settings.https_port, Some(&mut sink_done));
                sinks |= added;
                let entry = EncodedEntry::new(routes);
                bytes.extend_from_slice(&entry.bytes);
                h.update(b"e");
                put(&mut h, &entry.digest);
                continue;
            }
            let key = (e.spec.id.clone(), e.uri_index());
            let arc = shared.get(e.spec.id.as_str()).copied();
            let cached = kept
                .get(&key)
                .or_else(|| cache.entries.get(&key))
                .filter(|(old, _)| arc.is_some_and(|a| Arc::ptr_eq(old, a)))
                .map(|(_, entry)| entry.clone());
            let entry = match cached {
                Some(entry) => entry,
                None => Arc::new(EncodedEntry::new(
                    entry_routes(e, settings.https_port, None).0,
                )),
            };
            bytes.extend_from_slice(&entry.bytes);
            h.update(b"e");
            put(&mut h, &entry.digest);
            if let Some(a) = arc {
                kept.insert(key, (a.clone(), entry));
            }
        }
        encode_key(
            ROUTE_CONFIG_VIRTUAL_HOSTS,
            WireType::LengthDelimited,
            &mut value,
        );
        encode_varint(bytes.len() as u64, &mut value);
        value.extend_from_slice(&bytes);
    }
    cache.entries = kept;
    let encoded = Encoded {
        name: header.name,
        any: Any {
            type_url: <RouteConfiguration as prost::Name>::type_url(),
            value,
        },
        digest: h.finalize().into(),
    };
    (encoded, sinks)
}

#[derive(Debug)]
pub(super) struct RouteUpstream {
    cluster: Encoded,
    endpoints: Option<Encoded>,
}

impl Snapshot {
    /// Translates the route table and versions the result; its secrets
    /// (from the typed plugin configs) are what NACKs are masked with. Also returns what the translation left out (for the log).
    pub fn build(
        table: &RouteTable,
        settings: &ProxySettings,
        extra_provider_urls: &[String],
    ) -> (Snapshot, Vec<crate::translate::Skipped>) {
        Snapshot::build_cached(
            table,
            settings,
            extra_provider_urls,
            &mut TranslationCache::default(),
        )
    }

    /// [`Snapshot::build`], taking each unchanged route's upstream cluster
    /// and endpoints from `cache` (and leaving there those of this table).
    pub fn build_cached(
        table: &RouteTable,
        settings: &ProxySettings,
        extra_provider_urls: &[String],
        cache: &mut TranslationCache,
    ) -> (Snapshot, Vec<crate::translate::Skipped>) {
        let (route_config, sinks) = route_config_cached(table, settings, cache);
        let r = translate_without_routes(table, settings, extra_provider_urls, sinks);
        let mut kept = std::collections::HashMap::with_capacity(cache.routes.len());
        let mut clusters = Vec::new();
        let mut endpoints = Vec::new();
        for spec in table.enabled_shared() {
            let up = match cache.routes.remove(&spec.id) {
                Some((old, up)) if Arc::ptr_eq(&old, spec) => up,
                _ => {
                    let (c, e) = route_upstream(spec);
                    Arc::new(RouteUpstream {
                        cluster: Encoded::packed(c.name.clone(), &c),
                        endpoints: e.map(|e| Encoded::packed(e.cluster_name.clone(), &e)),
                    })
                }
            };
            clusters.push(up.cluster.clone());
            endpoints.extend(up.endpoints.clone());
            kept.insert(spec.id.clone(), (spec.clone(), up));
        }
        cache.routes = kept;
        clusters.extend(
            r.clusters
                .iter()
                .map(|c| Encoded::packed(c.name.clone(), c)),
        );
        let sds = r.secrets.iter().map(|x| Encoded::packed(x.name.clone(), x));
        let listeners = r
            .listeners
            .iter()
            .map(|l| Encoded::packed(l.name.clone(), l));
        let routes_ = std::iter::once(route_config);
        let typed = |items: Vec<Encoded>| {
            let mut h = Sha256::new();
            for e in &items {
                put(&mut h, e.name.as_bytes());
                put(&mut h, &e.digest);
            }
            TypeSnapshot {
                version: short_hex(&h.finalize()),
                resource_versions: items.iter().map(|e| short_hex(&e.digest)).collect(),
                resources: items.into_iter().map(|e| (e.name, e.any)).collect(),
            }
        };
        let snapshot = Snapshot {
            types: [
                typed(clusters),
                typed(endpoints),
                typed(sds.collect()),
                typed(listeners.collect()),
                typed(routes_.collect()),
            ],
            secrets: table.secrets_shared(),
        };
        (snapshot, r.skipped)
    }

    pub fn get(&self, kind: Kind) -> &TypeSnapshot {
        &self.types[kind.index()]
    }

    /// Type name → version. `secrets` only while there is one: Envoy asks
    /// for certificates only when a listener names them, so a gateway
    /// without ssls would otherwise never have ACKed every version.
    pub fn versions(&self) -> BTreeMap<String, String> {
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::Secrets || !self.get(*k).resources.is_empty())
            .map(|k| (k.name().to_string(), self.get(k).version.clone()))
            .collect()
    }

    /// `text` with every secret of the route set masked, on one line,
    /// shortened.
    pub(super) fn mask(&self, text: &str) -> String {
        clean(&mask(&self.secrets, text), MAX_MESSAGE)
    }
}

pub(super) fn mask(secrets: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "[redacted]");
    }
    out
}

/// Length-prefixed, so that concatenations cannot collide.
pub(super) fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

pub(super) fn short_hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in digest.iter().take(8) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Text from a peer, fit for one log line: control characters become
/// spaces, and at most `max` characters are kept.
pub(super) fn clean(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// The bytes a route configuration's version is computed from: its
/// encoding without route metadata and per-filter configs, followed by
/// them with map keys sorted (prost encodes maps in `HashMap` order, so a
/// route with two per-filter configs, CORS and RBAC, would otherwise get a
/// new version on every translation).
///
/// Without copying the configuration: its per-filter configs and metadata
/// are taken out to encode the rest, then put back, so `rc` is as it was.
pub(super) fn canonical_route_config_in_place(rc: &mut RouteConfiguration) -> Vec<u8> {
    let mut tail = Vec::new();
    let top = std::mem::take(&mut rc.typed_per_filter_config);
    canonical_typed(&mut tail, &top);
    let mut taken = Vec::new();
    for vh in &mut rc.virtual_hosts {
        let vh_typed = std::mem::take(&mut vh.typed_per_filter_config);
        canonical_typed(&mut tail, &vh_typed);
        let mut routes_taken = Vec::with_capacity(vh.routes.len());
        for r in &mut vh.routes {
            let typed = std::mem::take(&mut r.typed_per_filter_config);
            canonical_typed(&mut tail, &typed);
            let md = r.metadata.take();
            match &md {
                None => tail.push(b'-'),
                Some(md) => {
                    tail.push(b'm');
                    let sorted: BTreeMap<&String, &Struct> = md.filter_metadata.iter().collect();
                    for (ns, st) in sorted {
                        canonical_bytes(&mut tail, ns.as_bytes());
                        canonical_struct(&mut tail, st);
                    }
                    let typed: BTreeMap<&String, &Any> = md.typed_filter_metadata.iter().collect();
                    for (ns, any) in typed {
                        canonical_bytes(&mut tail, ns.as_bytes());
                        canonical_bytes(&mut tail, &any.encode_to_vec());
                    }
                }
            }
            routes_taken.push((typed, md));
        }
        taken.push((vh_typed, routes_taken));
    }
    let mut out = rc.encode_to_vec();
    out.extend_from_slice(&tail);
    // Put back.
    rc.typed_per_filter_config = top;
    for (vh, (vh_typed, routes_taken)) in rc.virtual_hosts.iter_mut().zip(taken) {
        vh.typed_per_filter_config = vh_typed;
        for (r, (typed, md)) in vh.routes.iter_mut().zip(routes_taken) {
            r.typed_per_filter_config = typed;
            r.metadata = md;
        }
    }
    out
}

/// A per-filter config map, keys sorted.
fn canonical_typed(out: &mut Vec<u8>, map: &std::collections::HashMap<String, Any>) {
    out.push(b't');
    let sorted: BTreeMap<&String, &Any> = map.iter().collect();
    for (name, any) in sorted {
        canonical_bytes(out, name.as_bytes());
        canonical_bytes(out, &any.encode_to_vec());
    }
}

pub(super) fn canonical_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

pub(super) fn canonical_struct(out: &mut Vec<u8>, s: &Struct) {
    out.push(b'{');
    let sorted: BTreeMap<&String, &PbValue> = s.fields.iter().collect();
    for (k, v) in sorted {
        canonical_bytes(out, k.as_bytes());
        canonical_value(out, v);
    }
    out.push(b'}');
}

pub(super) fn canonical_value(out: &mut Vec<u8>, v: &PbValue) {
    match &v.kind {
        None => out.push(b'0'),
        Some(value::Kind::NullValue(_)) => out.push(b'n'),
        Some(value::Kind::NumberValue(n)) => {
            out.push(b'f');
            out.extend_from_slice(&n.to_bits().to_be_bytes());
        }
        Some(value::Kind::StringValue(s)) => {
            out.push(b's');
            canonical_bytes(out, s.as_bytes());
        }
        Some(value::Kind::BoolValue(b)) => out.push(if *b { b't' } else { b'F' }),
        Some(value::Kind::StructValue(s)) => canonical_struct(out, s),
        Some(value::Kind::ListValue(l)) => {
            out.push(b'[');
            for x in &l.values {
                canonical_value(out, x);
            }
            out.push(b']');
        }
    }
}
