"""Test doubles of a Peruvian SGD (document-management system) speaking the
PIDE `IOTramite` contract (shared/PIDE-IOTRAMITE.md) to the ecointegra node.
Built from the contract, never from the node's WSDL: hub.wsdl and entity.wsdl
beside this file are written from the contract. Run it with the python that
tests/pide/setup.sh prints (it needs zeep).

A sending SGD: calls the node's hub service (hub.wsdl)
    sgd.py call --endpoint URL [--user U --password P] [--wsdl hub.wsdl]
                OPERATION [--json '{...}']
  OPERATION: recepcionarTramiteResponse, cargoResponse (the hub's CargoTramite,
  with vrucentrem and vrucentrec), consultarTramiteResponse, getTipoDocumento,
  getCUO, getCUOEntidad. The JSON holds the fields of `request`; for getCUO
  {"ip": ...}, for getCUOEntidad {"ruc": ..., "servicio": ...}, for
  getTipoDocumento nothing.
    - "NAME@file": "/path" sends that file's bytes as NAME (e.g. "bpdfdoc@file");
      a plain string for bpdfdoc/bcarstd is sent verbatim as base64 text.
    - "lstanexos": ["a.pdf", "b.xlsx"] sends one documentoAnexo per name
      (for nil or odd annexes use `raw`).
    - dfecdoc/dfecregstd strings are sent verbatim ("2027-02-01T08:44:55.857-05:00").
  Prints one line of JSON: the `return` (bytes as base64, dateTimes as ISO
  strings, getTipoDocumento a list), exit 0. A SOAP Fault prints
  {"fault": {"code": ..., "message": ...}}, exit 2. Any other error (HTTP
  error without a Fault, an answer zeep cannot read as the contract's): message
  on stderr, exit 1.

A hostile sender: POSTs a file as it is
    sgd.py raw --endpoint URL --body-file F [--soapaction S] [--user U --password P]
               [--content-type T]
  Sends Content-Type `text/xml; charset=utf-8` (or T) and `SOAPAction: S`
  (default `""`, two quote characters). Prints {"status": N, "body": "..."}, exit 0.

A receiving SGD: the entity endpoint (entity.wsdl) the node delivers to
    sgd.py serve --port P --dir D [--user U --password P] [--fail-first N]
                 [--hub URL [--hub-user U --hub-password P]]
  Listens on 127.0.0.1; prints `listening <port>` once bound (--port 0 picks one).
  POST to any path is the SOAP endpoint, namespace http://ws.wsiotramite.segdi.gob.pe/.
  It checks strictly: Content-Type text/xml (charset, if given, utf-8), a
  SOAPAction header of "" (the WSDL's soapAction), a SOAP 1.1 Envelope, one
  Body element in the entity namespace named like an operation, with one
  unqualified `request` child whose fields are unqualified, known, in the
  contract's order, of the right XML Schema type (xs:int, xs:dateTime with
  an offset, xs:base64Binary), with snumanx and snumfol present. A violation
  answers HTTP 500 with a SOAP Fault (faultcode Client).
    - --user: Basic auth on POSTs (401 otherwise). --fail-first N: the first N
      POSTs answer 503, whatever they hold.
    - recepcionarTramiteResponse: vcuo must be 10 digits, vrucentrem/vrucentrec
      11 digits, bpdfdoc and vnomdoc present. The main PDF goes to
      D/received/<vcuo>/<vnomdoc>; each annex of lstanexos is downloaded, 30 s
      at most, from
          vurldocanx + ("/" unless it ends with one) + percent-encoded name
      (every byte but letters, digits and _.-~ encoded, so a space is %20) into
      D/received/<vcuo>/anexos/<name>. Then a line is appended to
      D/received/<vcuo>/calls and D/received/<vcuo>/request.json is written last
      (every field received, in order; bpdfdoc as {"sha256", "length"};
      lstanexos as a list of names). Every file is written atomically. The same
      CUO again with the same fields answers 0000 and appends to calls; with
      other fields it answers -1 "CUO ya recibido". A failed download answers
      -1 naming the annex and records nothing.
      With --hub, once it has answered a first delivery, it sends its cargo
      to the hub's cargoResponse like a real receiving SGD (vrucentrem = its
      own RUC, the filing's vrucentrec; vrucentrec = the filing's sender;
      cflgest "R"; a one-page PDF), and writes the request and the hub's
      answer to D/cargos-sent/<vcuo>.json.
    - cargoResponse (the entity's CargoTramite, starting at vcuo): bcarstd goes
      to D/cargos/<vcuo>.pdf, D/cargos/<vcuo>.json is written (bcarstd as
      {"sha256", "length"}), then a line is appended to D/cargos/<vcuo>.calls
      (last, so a reader that counts the lines finds the files complete).
    - consultarTramiteResponse (request = the CUO string): cflgest "P" with
      vcodres 0000 when D/received/<vcuo>/request.json exists, else vcodres 0001.
    - GET /anexos/<path> serves D/anexos/<path> (no auth); GET /slow/<any>
      sends 200 headers with a 100 MB Content-Length and then nothing until the
      client goes (10 minutes at most); anything else is 404.
  Every refusal (Fault or vcodres -1) is one line in D/errors.log, so a
  happy-path test can check that file does not exist. D/requests.log has one
  line per POST: time, HTTP status, operation.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.client
import json
import os
import re
import select
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
HUB_WSDL = HERE / "hub.wsdl"
HUB_NS = "http://ws.wsiopidetramite.segdi.gob.pe/"
ENTITY_NS = "http://ws.wsiotramite.segdi.gob.pe/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
LIMA = datetime.timezone(datetime.timedelta(hours=-5))

# Hub operations whose input is plain parameters rather than one `request`.
PARAMETER_OPERATIONS = {"getTipoDocumento", "getCUO", "getCUOEntidad"}

# --- The contract's entity-side request types: fields in order, with kinds ---
STRING, INT, DATETIME, BASE64, ANNEXES = "string", "int", "dateTime", "base64", "annexes"
RECEPCION_TRAMITE = [
    ("vrucentrem", STRING), ("vrucentrec", STRING), ("vnomentemi", STRING),
    ("vuniorgrem", STRING), ("vcuo", STRING), ("vcuoref", STRING),
    ("ccodtipdoc", STRING), ("vnumdoc", STRING), ("dfecdoc", DATETIME),
    ("vuniorgdst", STRING), ("vnomdst", STRING), ("vnomcardst", STRING),
    ("vasu", STRING), ("snumanx", INT), ("snumfol", INT),
    ("vurldocanx", STRING), ("bpdfdoc", BASE64), ("vnomdoc", STRING),
    ("lstanexos", ANNEXES), ("ctipdociderem", STRING), ("vnumdociderem", STRING),
]
CARGO_TRAMITE_ENTITY = [
    ("vcuo", STRING), ("vcuoref", STRING), ("vnumregstd", STRING),
    ("vanioregstd", STRING), ("dfecregstd", DATETIME), ("vuniorgstd", STRING),
    ("vusuregstd", STRING), ("bcarstd", BASE64), ("vobs", STRING),
    ("cflgest", STRING), ("vdesanxstdrec", STRING),
]
REQUIRED_FIELDS = {"snumanx", "snumfol"}
BINARY_FIELDS = {"bpdfdoc", "bcarstd"}

CUO_RE = re.compile(r"\d{10}")
RUC_RE = re.compile(r"\d{11}")
INT_RE = re.compile(r"[+-]?\d+")
DATETIME_RE = re.compile(
    r"-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# Names in D/received/<vcuo>/ that the main document must not take.
RESERVED_NAMES = {"request.json", "calls", "anexos"}
ANNEX_TIMEOUT = 30
SLOW_LENGTH = 100_000_000
SLOW_MAX_SECONDS = 600


class ContractError(Exception):
    """What was received breaks the contract: answered with a SOAP Fault."""


class Refusal(Exception):
    """A well-formed request the SGD turns down: answered with vcodres -1."""


# ----------------------------------------------------------------- helpers

def now_lima():
    return datetime.datetime.now(LIMA)


def utc_stamp():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def write_atomic(path, data):
    """Writes data (bytes) to path through a temporary file and a rename."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append_line(path, line):
    with open(path, "a", encoding="utf-8") as out:
        out.write(line.replace("\n", " ") + "\n")


def digest(data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}


def to_json(value):
    """zeep's serialized objects as JSON values: bytes as base64, dates as ISO."""
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def safe_file_name(name, what):
    if (not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or len(name.encode("utf-8")) > 255):
        raise Refusal(f"{what}: nombre de archivo no válido: {name!r}")
    return name


def annex_url(base, name):
    """The annex convention: vurldocanx, a '/', the percent-encoded name."""
    if not base.endswith("/"):
        base += "/"
    return base + urllib.parse.quote(name, safe="")


def no_proxy_opener():
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def minimal_pdf(text):
    """A one-page PDF showing one line of text (the cargo a real SGD stamps)."""
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    content = f"BT /F1 14 Tf 72 770 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


# ------------------------------------------------- reading what is received

def split_tag(tag):
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def is_nil(element):
    return element.get(f"{{{XSI}}}nil", "").strip() in ("true", "1")


def check_no_text(element, where):
    texts = [element.text] + [child.tail for child in element]
    if any(text and text.strip() for text in texts):
        raise ContractError(f"{where}: text where only elements belong")


def check_http(headers):
    content_type = headers.get("Content-Type")
    if content_type is None:
        raise ContractError("no Content-Type (SOAP 1.1 wants text/xml)")
    media_type, *parameters = [part.strip() for part in content_type.split(";")]
    if media_type.lower() != "text/xml":
        raise ContractError(f"Content-Type {content_type!r}: SOAP 1.1 wants text/xml")
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise ContractError(f"Content-Type {content_type!r}: the contract is UTF-8")
    action = headers.get("SOAPAction")
    if action is None:
        raise ContractError("no SOAPAction header (SOAP 1.1 requires it; the WSDL's is \"\")")
    if action.strip() not in ('""', ""):
        raise ContractError(f"SOAPAction {action!r}: the WSDL's soapAction is \"\"")


def read_envelope(body):
    """The Body's one element, or ContractError."""
    declaration = re.match(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"']([^\"']+)", body)
    if declaration and declaration.group(1).lower() not in (b"utf-8", b"utf8"):
        raise ContractError(f"XML encoding {declaration.group(1).decode()}: the contract is UTF-8")
    try:
        envelope = ET.fromstring(body)
    except ET.ParseError as error:
        raise ContractError(f"not well-formed XML: {error}") from None
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise ContractError(f"root {envelope.tag} is not a SOAP 1.1 Envelope ({SOAP_ENV})")
    bodies = [child for child in envelope if child.tag == f"{{{SOAP_ENV}}}Body"]
    if len(bodies) != 1:
        raise ContractError(f"the Envelope has {len(bodies)} SOAP 1.1 Body elements")
    payload = list(bodies[0])
    if len(payload) != 1:
        raise ContractError(f"the Body has {len(payload)} elements, not one")
    return payload[0]


def operation_of(element):
    """The entity operation an element of the Body asks for, or ContractError."""
    namespace, operation = split_tag(element.tag)
    if namespace != ENTITY_NS:
        raise ContractError(
            f"body element {element.tag} is not in the entity namespace {ENTITY_NS}")
    if operation not in ENTITY_OPERATIONS:
        raise ContractError(f"unknown operation {operation}")
    return operation


def request_of(operation, element):
    """The operation element's one unqualified `request` child, or ContractError."""
    check_no_text(element, operation)
    children = list(element)
    if len(children) != 1 or children[0].tag != "request":
        names = [child.tag for child in children]
        raise ContractError(f"{operation}: wants one unqualified <request> child, got {names}")
    return children[0]


def parse_value(type_name, element, kind):
    name = element.tag
    where = f"{type_name}.{name}"
    if is_nil(element):
        if kind != ANNEXES:
            raise ContractError(f"{where}: xsi:nil on a field that is not nillable")
        if len(element) or (element.text or "").strip():
            raise ContractError(f"{where}: xsi:nil with content")
        return None
    if kind == ANNEXES:
        check_no_text(element, where)
        children = list(element)
        if any(child.tag != "vnomdoc" for child in children) or len(children) > 1:
            raise ContractError(
                f"{where}: documentoAnexo holds one unqualified <vnomdoc> at most, "
                f"got {[child.tag for child in children]}")
        return (children[0].text or "") if children else None
    if len(element):
        raise ContractError(f"{where}: elements inside a simple field")
    text = element.text or ""
    if kind == STRING:
        return text
    collapsed = text.strip()
    if kind == INT:
        if not INT_RE.fullmatch(collapsed) or not -2**31 <= int(collapsed) < 2**31:
            raise ContractError(f"{where}: {text!r} is not an xs:int")
        return int(collapsed)
    if kind == DATETIME:
        if not DATETIME_RE.fullmatch(collapsed):
            raise ContractError(
                f"{where}: {text!r} is not an xs:dateTime with an offset")
        return collapsed
    try:  # BASE64: xs:base64Binary allows whitespace between characters
        return base64.b64decode("".join(collapsed.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ContractError(f"{where}: not xs:base64Binary") from None


def parse_fields(request, type_name, fields):
    """The fields of a request element, checked against the contract's type."""
    position = {name: index for index, (name, _) in enumerate(fields)}
    kinds = dict(fields)
    check_no_text(request, type_name)
    values = {}
    last_index, last_name = -1, None
    for element in request:
        name = element.tag
        if name.startswith("{"):
            raise ContractError(f"{type_name}: field {name} must be unqualified")
        if name not in position:
            raise ContractError(f"{type_name}: unknown field <{name}>")
        index = position[name]
        if index < last_index:
            raise ContractError(f"{type_name}: field <{name}> out of order (after <{last_name}>)")
        if index == last_index and kinds[name] != ANNEXES:
            raise ContractError(f"{type_name}: field <{name}> repeated")
        last_index, last_name = index, name
        value = parse_value(type_name, element, kinds[name])
        if kinds[name] == ANNEXES:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    missing = [name for name, _ in fields if name in REQUIRED_FIELDS and name not in values]
    if missing:
        raise ContractError(f"{type_name}: required field(s) missing: {', '.join(missing)}")
    if values.get("snumanx", 0) < 0:
        raise ContractError(f"{type_name}.snumanx: negative")
    return values


# ------------------------------------------------------- writing answers

def answer_envelope(operation, fields):
    """The `<operation>Response` envelope; fields is a list of (name, value)."""
    inner = "".join(f"<{name}>{escape(value)}</{name}>"
                    for name, value in fields if value is not None)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body>'
        f'<ns2:{operation}Response xmlns:ns2="{ENTITY_NS}"><return>{inner}</return>'
        f'</ns2:{operation}Response></S:Body></S:Envelope>'
    ).encode("utf-8")


def fault_envelope(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body><S:Fault>'
        f'<faultcode>S:{code}</faultcode><faultstring>{escape(message)}</faultstring>'
        '</S:Fault></S:Body></S:Envelope>'
    ).encode("utf-8")


# ---------------------------------------------------- the receiving SGD

class EntityDouble:
    """The state and the operations of the SGD's entity endpoint."""

    def __init__(self, directory, fail_first, hub):
        self.dir = directory
        self.received = directory / "received"
        self.cargos = directory / "cargos"
        self.staging = directory / ".staging"
        for folder in (self.received, self.cargos, self.staging, directory / "anexos"):
            folder.mkdir(parents=True, exist_ok=True)
        self.hub = hub  # None, or dict(url, user, password)
        self._failures_left = fail_first
        self._lock = threading.Lock()
        self._cuo_locks = {}
        self._registry_number = 0

    # -- bookkeeping

    def take_failure(self):
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return True
            return False

    def log_error(self, operation, message):
        with self._lock:
            append_line(self.dir / "errors.log", f"{utc_stamp()} {operation} {message}")

    def log_request(self, status, operation):
        with self._lock:
            append_line(self.dir / "requests.log", f"{utc_stamp()} {status} {operation}")

    def cuo_lock(self, vcuo):
        with self._lock:
            return self._cuo_locks.setdefault(vcuo, threading.Lock())

    def next_registry_number(self):
        with self._lock:
            self._registry_number += 1
            return f"{self._registry_number:06d}"

    # -- operations: each returns the answer's bytes and, maybe, work to do after it

    def recepcionar(self, request):
        fields = parse_fields(request, "RecepcionTramite", RECEPCION_TRAMITE)
        operation = "recepcionarTramiteResponse"
        try:
            first = self._receive(fields)
        except Refusal as refusal:
            self.log_error(operation, str(refusal))
            return answer_envelope(operation, [("vcodres", "-1"), ("vdesres", str(refusal))]), None
        after = None
        if first and self.hub:
            after = lambda: self._send_cargo_to_hub(fields)
        return answer_envelope(operation, [("vcodres", "0000"), ("vdesres", "OK")]), after

    def _receive(self, fields):
        """Stores a filing; True for a first delivery, False for a repeat."""
        vcuo = fields.get("vcuo")
        if vcuo is None or not CUO_RE.fullmatch(vcuo):
            raise Refusal(f"vcuo no válido (10 dígitos): {vcuo!r}")
        for name in ("vrucentrem", "vrucentrec"):
            if fields.get(name) is None or not RUC_RE.fullmatch(fields[name]):
                raise Refusal(f"{name} no válido (RUC de 11 dígitos): {fields.get(name)!r}")
        pdf = fields.get("bpdfdoc")
        if pdf is None:
            raise Refusal("falta el documento principal (bpdfdoc)")
        main_name = safe_file_name(fields.get("vnomdoc"), "vnomdoc")
        if main_name in RESERVED_NAMES:
            raise Refusal(f"vnomdoc: nombre reservado por el doble: {main_name}")
        annexes = fields.get("lstanexos", [])
        for name in annexes:
            if name is None:
                raise Refusal("lstanexos: anexo sin nombre (vnomdoc)")
            safe_file_name(name, "lstanexos")
        if len(set(annexes)) != len(annexes):
            raise Refusal("lstanexos: nombres repetidos")
        base_url = fields.get("vurldocanx")
        if annexes and not (base_url or "").startswith(("http://", "https://")):
            raise Refusal(f"vurldocanx no es un URL http(s): {base_url!r}")

        record = dict(fields)
        record["bpdfdoc"] = digest(pdf)
        folder = self.received / vcuo
        with self.cuo_lock(vcuo):
            request_json = folder / "request.json"
            if request_json.exists():
                if json.loads(request_json.read_text(encoding="utf-8")) != record:
                    raise Refusal(f"CUO ya recibido: {vcuo}")
                append_line(folder / "calls", f"{utc_stamp()} again")
                return False
            with tempfile.TemporaryDirectory(dir=self.staging) as staging:
                for name in annexes:
                    download(annex_url(base_url, name), Path(staging) / name, name)
                folder.mkdir(exist_ok=True)
                write_atomic(folder / main_name, pdf)
                if annexes:
                    (folder / "anexos").mkdir(exist_ok=True)
                for name in annexes:
                    os.replace(Path(staging) / name, folder / "anexos" / name)
            append_line(folder / "calls", f"{utc_stamp()} first")
            write_atomic(request_json, json.dumps(record, ensure_ascii=False, indent=1).encode())
            return True

    def cargo(self, request):
        fields = parse_fields(request, "CargoTramite", CARGO_TRAMITE_ENTITY)
        operation = "cargoResponse"
        vcuo = fields.get("vcuo")
        if vcuo is None or not CUO_RE.fullmatch(vcuo):
            message = f"vcuo no válido (10 dígitos): {vcuo!r}"
            self.log_error(operation, message)
            return answer_envelope(operation, [("vcodres", "-1"), ("vdesres", message)]), None
        record = dict(fields)
        with self.cuo_lock(vcuo):
            if "bcarstd" in fields:
                write_atomic(self.cargos / f"{vcuo}.pdf", fields["bcarstd"])
                record["bcarstd"] = digest(fields["bcarstd"])
            write_atomic(self.cargos / f"{vcuo}.json",
                         json.dumps(record, ensure_ascii=False, indent=1).encode())
            append_line(self.cargos / f"{vcuo}.calls", utc_stamp())
        return answer_envelope(operation, [("vcodres", "0000"), ("vdesres", "OK")]), None

    def consultar(self, request):
        operation = "consultarTramiteResponse"
        if len(request) or is_nil(request):
            raise ContractError(
                f"{operation}: on the entity side <request> is the CUO string itself, "
                f"got elements {[child.tag for child in request]}")
        vcuo = (request.text or "").strip()
        stored = self.received / vcuo / "request.json"
        if CUO_RE.fullmatch(vcuo) and stored.exists():
            filing = json.loads(stored.read_text(encoding="utf-8"))
            return answer_envelope(operation, [
                ("vcodres", "0000"), ("vdesres", "OK"), ("vcuo", vcuo),
                ("vcuoref", filing.get("vcuoref")), ("cflgest", "P"),
            ]), None
        return answer_envelope(operation, [
            ("vcodres", "0001"), ("vdesres", "Trámite no encontrado"), ("vcuo", vcuo),
        ]), None

    # -- the cargo a receiving SGD sends back through the hub

    def _send_cargo_to_hub(self, filing):
        vcuo = filing["vcuo"]
        registered = now_lima()
        annexes = filing.get("lstanexos", [])
        request = {
            "vrucentrem": filing["vrucentrec"],  # the cargo's sender: this SGD
            "vrucentrec": filing["vrucentrem"],  # back to the filing's sender
            "vcuo": vcuo,
            "vcuoref": filing.get("vcuoref"),
            "vnumregstd": self.next_registry_number(),
            "vanioregstd": str(registered.year),
            "dfecregstd": registered.isoformat(timespec="milliseconds"),
            "vuniorgstd": filing.get("vuniorgdst") or "MESA DE PARTES",
            "vusuregstd": "sgd-doble",
            "bcarstd": minimal_pdf(f"Cargo de recepcion - CUO {vcuo}"),
            "vobs": "",
            "cflgest": "R",
            "vdesanxstdrec": ", ".join(annexes),
        }
        outcome = {"request": dict(request, bcarstd=digest(request["bcarstd"]))}
        try:
            from zeep.exceptions import Fault
            from zeep.helpers import serialize_object
            service = hub_service(HUB_WSDL, self.hub["url"], self.hub["user"], self.hub["password"])
            try:
                outcome["return"] = to_json(serialize_object(service.cargoResponse(request=request)))
            except Fault as fault:
                outcome["fault"] = {"code": fault.code, "message": fault.message}
        except Exception as error:  # recorded for the test to read
            outcome["error"] = f"{type(error).__name__}: {error}"
        folder = self.dir / "cargos-sent"
        folder.mkdir(exist_ok=True)
        write_atomic(folder / f"{vcuo}.json", json.dumps(outcome, ensure_ascii=False, indent=1).encode())


def download(url, target, name):
    """Fetches one annex into target within ANNEX_TIMEOUT seconds, or Refusal."""
    deadline = time.monotonic() + ANNEX_TIMEOUT
    try:
        with no_proxy_opener().open(url, timeout=ANNEX_TIMEOUT) as response, \
                open(target, "wb") as out:
            expected = response.headers.get("Content-Length")
            size = 0
            while chunk := response.read(65536):
                out.write(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"more than {ANNEX_TIMEOUT} s")
            if expected is not None and int(expected) != size:
                raise OSError(f"got {size} of {expected} bytes")
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise Refusal(f"no se pudo descargar el anexo {name} de {url}: {error}") from None


ENTITY_OPERATIONS = {
    "recepcionarTramiteResponse": EntityDouble.recepcionar,
    "cargoResponse": EntityDouble.cargo,
    "consultarTramiteResponse": EntityDouble.consultar,
}


class EntityHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sgd-doble"

    @property
    def double(self):
        return self.server.double

    def do_POST(self):
        body = self._read_body()
        if body is None:
            return
        if self.double.take_failure():
            self.double.log_request(503, "-")
            return self._send(503, b"Service Unavailable (--fail-first)\n", "text/plain")
        if not self._authorized():
            self.double.log_request(401, "-")
            return self._send(401, b"Unauthorized\n", "text/plain",
                              {"WWW-Authenticate": 'Basic realm="sgd"'})
        operation = "-"
        after = None
        try:
            check_http(self.headers)
            element = read_envelope(body)
            operation = operation_of(element)
            request = request_of(operation, element)
            answer, after = ENTITY_OPERATIONS[operation](self.double, request)
            status = 200
        except ContractError as error:
            self.double.log_error(operation, str(error))
            answer, status = fault_envelope("Client", str(error)), 500
        except Exception as error:  # a bug of the double: still answered and logged
            self.double.log_error(operation, f"internal error: {type(error).__name__}: {error}")
            answer, status = fault_envelope("Server", f"{type(error).__name__}: {error}"), 500
        self.double.log_request(status, operation)
        self._send(status, answer, "text/xml; charset=utf-8")
        if after:
            threading.Thread(target=after, daemon=True).start()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/anexos/"):
            return self._serve_annex(urllib.parse.unquote(path[len("/anexos/"):]))
        if path.startswith("/slow/"):
            return self._stall()
        self._send(404, b"Not Found\n", "text/plain")

    def _serve_annex(self, relative):
        root = (self.double.dir / "anexos").resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return self._send(404, b"Not Found\n", "text/plain")
        self._send(200, target.read_bytes(), "application/octet-stream")

    def _stall(self):
        """Promises a large body, sends none, and waits for the client to go."""
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(SLOW_LENGTH))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        connection = self.connection
        deadline = time.monotonic() + SLOW_MAX_SECONDS
        while time.monotonic() < deadline:
            readable, _, _ = select.select([connection], [], [], 1.0)
            if readable:
                try:
                    if not connection.recv(4096):
                        return
                except OSError:
                    return

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            self._send(411, b"Length Required\n", "text/plain")
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def _authorized(self):
        user = self.server.user
        if user is None:
            return True
        expected = "Basic " + base64.b64encode(
            f"{user}:{self.server.password}".encode()).decode()
        return self.headers.get("Authorization", "").strip() == expected

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


# ------------------------------------------------------------ the client

def hub_service(wsdl, endpoint, user=None, password=None):
    """A zeep service proxy of hub.wsdl bound to endpoint."""
    import requests
    from zeep import Client
    from zeep.transports import Transport

    session = requests.Session()
    session.trust_env = False  # loopback: no proxies from the environment
    if user is not None:
        session.auth = requests.auth.HTTPBasicAuth(user, password or "")
    client = Client(str(wsdl), transport=Transport(session=session, operation_timeout=120))
    return client.create_service(f"{{{HUB_NS}}}IOTramitePortBinding", endpoint)


def prepare_fields(fields):
    """The --json fields as zeep takes them (files read, annexes as elements)."""
    prepared = {}
    for key, value in fields.items():
        if key.endswith("@file"):
            prepared[key[:-len("@file")]] = Path(value).read_bytes()
        elif key == "lstanexos":
            prepared[key] = [{"vnomdoc": name} for name in value]
        else:
            prepared[key] = value
    return prepared


def command_call(args):
    from zeep.exceptions import Fault
    from zeep.helpers import serialize_object

    fields = prepare_fields(json.loads(args.json) if args.json else {})
    service = hub_service(args.wsdl, args.endpoint, args.user, args.password)
    operation = getattr(service, args.operation)
    try:
        if args.operation in PARAMETER_OPERATIONS:
            result = operation(**fields)
        else:
            result = operation(request=fields)
    except Fault as fault:
        print(json.dumps({"fault": {"code": fault.code, "message": fault.message}},
                         ensure_ascii=False), flush=True)
        return 2
    result = to_json(serialize_object(result))
    if args.operation == "getTipoDocumento" and result is None:
        result = []
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


def command_raw(args):
    headers = {"Content-Type": args.content_type, "SOAPAction": args.soapaction}
    if args.user is not None:
        credentials = f"{args.user}:{args.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    request = urllib.request.Request(args.endpoint, data=Path(args.body_file).read_bytes(),
                                     headers=headers, method="POST")
    try:
        with no_proxy_opener().open(request, timeout=120) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    print(json.dumps({"status": status, "body": body.decode("utf-8", "replace")},
                     ensure_ascii=False), flush=True)
    return 0


def command_serve(args):
    directory = Path(args.dir)
    hub = None
    if args.hub:
        hub = {"url": args.hub, "user": args.hub_user, "password": args.hub_password}
    server = ThreadingHTTPServer(("127.0.0.1", args.port), EntityHandler)
    server.daemon_threads = True
    server.double = EntityDouble(directory, args.fail_first, hub)
    server.user, server.password = args.user, args.password or ""
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="PIDE IOTramite SGD test doubles")
    commands = parser.add_subparsers(dest="command", required=True)

    call = commands.add_parser("call", help="call the node's hub service with zeep")
    call.add_argument("--endpoint", required=True)
    call.add_argument("--user")
    call.add_argument("--password")
    call.add_argument("--wsdl", default=str(HUB_WSDL))
    call.add_argument("operation")
    call.add_argument("--json", help="the request's fields, as a JSON object")
    call.set_defaults(run=command_call)

    raw = commands.add_parser("raw", help="POST a file as it is")
    raw.add_argument("--endpoint", required=True)
    raw.add_argument("--body-file", required=True)
    raw.add_argument("--soapaction", default='""')
    raw.add_argument("--content-type", default="text/xml; charset=utf-8")
    raw.add_argument("--user")
    raw.add_argument("--password")
    raw.set_defaults(run=command_raw)

    serve = commands.add_parser("serve", help="play an SGD's entity endpoint")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--dir", required=True)
    serve.add_argument("--user")
    serve.add_argument("--password")
    serve.add_argument("--fail-first", type=int, default=0)
    serve.add_argument("--hub", help="the node's hub URL, to send cargos back to")
    serve.add_argument("--hub-user")
    serve.add_argument("--hub-password")
    serve.set_defaults(run=command_serve)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:
        print(f"sgd.py {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
