#!/usr/bin/env python3
"""Builds src/api/proto_fields.json: the protobuf field numbers of the Kubernetes messages Capstan decodes (kubectl
sends protobuf for objects made by its `create` generators). The numbers are read from the prost attributes of the
k8s-pb crate and the JSON names from k8s-openapi's field names, both in the local cargo registry:

    cargo fetch   # with k8s-pb and k8s-openapi resolved somewhere (k8s-openapi is a dev-dependency)
    python3 scripts/gen_proto_fields.py
"""
import glob, json, os, re, sys

reg = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
pb = sorted(d for r in reg for d in glob.glob(r + "k8s-pb-*"))[-1] + "/src"
oa = sorted(d for r in reg for d in glob.glob(r + "k8s-openapi-*"))[-1] + "/src"

# Every JSON field name k8s-openapi knows, keyed by its lowercase form.
names = {}
for f in glob.glob(oa + "/**/*.rs", recursive=True):
    for m in re.finditer(r'"([a-zA-Z][a-zA-Z0-9]*)" => (?:Ok\()?Field::', open(f).read()):
        names.setdefault(m.group(1).lower(), m.group(1))

MODULES = ["api/core/v1", "api/apps/v1", "api/batch/v1", "api/coordination/v1", "api/discovery/v1",
           "api/storage/v1", "api/autoscaling/v1", "api/policy/v1", "api/rbac/v1", "api/authorization/v1",
           "api/authentication/v1", "api/certificates/v1", "apimachinery/pkg/apis/meta/v1",
           "apimachinery/pkg/runtime", "apimachinery/pkg/api/resource", "apimachinery/pkg/util/intstr"]

attr = re.compile(r'#\[prost\((\w+)(?: = "([^"]+)")?(?:, (optional|repeated|required))?, tag = "(\d+)"\)\] pub (?:r#)?(\w+): (.*?),? ?(?=#\[prost|$)')

def resolve(module, ty):
    ty = ty.strip().rstrip(",").strip().replace(" ", "").replace(",>", ">")
    for wrap in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"]:
        if ty.startswith(wrap):
            ty = ty[len(wrap):-1]
    if ty.startswith("::prost::alloc::collections::BTreeMap<"):
        ty = ty[len("::prost::alloc::collections::BTreeMap<"):-1].split(",", 1)[1].strip()
        for wrap in ["::core::option::Option<", "::prost::alloc::vec::Vec<"]:
            if ty.startswith(wrap):
                ty = ty[len(wrap):-1]
    parts = module.split("/")
    segs = ty.split("::")
    while segs and segs[0] == "super":
        parts = parts[:-1]
        segs = segs[1:]
    return ".".join(parts + segs)

table = {}
for mod in MODULES:
    text = open(f"{pb}/{mod}/mod.rs").read()
    for m in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', text, re.S):
        name, body = m.group(1), m.group(2)
        body = re.sub(r'\s*///[^\n]*', '', body)
        body = re.sub(r'\s+', ' ', body).strip()
        fields = []
        for a in attr.finditer(body):
            kind, arg, label, tag, field, ty = a.groups()
            key = field.replace("_", "").lower()
            json_name = names.get(key)
            if json_name is None:
                json_name = field.split("_")[0] + "".join(p.title() for p in field.split("_")[1:])
            entry = {"tag": int(tag), "json": json_name, "repeated": label == "repeated"}
            if kind == "message":
                entry["type"] = "message"
                entry["message"] = resolve(mod, ty)
            elif kind == "btree_map":
                vkind = arg.split(",")[1].strip()
                entry["type"] = "map"
                entry["value"] = vkind
                if vkind == "message":
                    entry["message"] = resolve(mod, ty)
            elif kind == "bytes":
                entry["type"] = "bytes"
            else:
                entry["type"] = kind
            fields.append(entry)
        table[mod.replace("/", ".") + "." + name] = fields

out = os.path.join(os.path.dirname(__file__), "..", "src", "api", "proto_fields.json")
json.dump(table, open(out, "w"), separators=(",", ":"), sort_keys=True)
print(f"{len(table)} messages written to {out}", file=sys.stderr)
