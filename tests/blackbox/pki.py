"""A test PKI made with `cryptography`: a CA that issues server certificates for 127.0.0.1 (and client ones), and
files written whole with mode 0600. For the gateway's own TLS listener (test_tls.py) and TLS upstreams
(test_v1_proxy.py)."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def name(cn, org="dyad-test"):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Ca:
    def __init__(self, cn):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = name(cn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject, serial=None, server=True, expired=False):
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = (NOW - datetime.timedelta(days=10), NOW - datetime.timedelta(days=1)) if expired else \
                     (NOW - datetime.timedelta(hours=1), NOW + datetime.timedelta(days=10))
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(key.public_key())
             .serial_number(serial or x509.random_serial_number()).not_valid_before(start).not_valid_after(end))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


def write(path, data, mode=0o600):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # as a deployment would: whole files, never half-written
    return str(path)
