//! Key-pair authentication: a JWT signed RS256 with the user's RSA private key (PKCS#8 PEM, as
//! `openssl genrsa | openssl pkcs8 -topk8 -nocrypt` writes it), which Snowflake checks against the
//! public key registered with `ALTER USER .. SET RSA_PUBLIC_KEY`.
//!
//! ```text
//!  header  {"alg":"RS256","typ":"JWT"}
//!  payload {"iss":"<ACCOUNT>.<USER>.SHA256:<fingerprint>","sub":"<ACCOUNT>.<USER>","iat":..,"exp":..}
//!  fingerprint = base64(sha256(SubjectPublicKeyInfo DER of the public key))  (DESC USER's RSA_PUBLIC_KEY_FP)
//! ```
//!
//! ACCOUNT is the account identifier upper-cased and cut at its first `.` (a region or
//! `privatelink` suffix is not part of it), as Snowflake's drivers do; USER is upper-cased.

use base64::Engine;
use ring::signature::{KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};

/// How long a token is valid: Snowflake's drivers use a minute, and a new one is made per login.
pub const LIFETIME_SECS: i64 = 60;

/// A user's RSA key, ready to sign.
pub struct KeyPair {
    key: RsaKeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "KeyPair({})", self.fingerprint)
    }
}

/// A DER length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo of an RSA public key given as PKCS#1 `RSAPublicKey` DER.
fn spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: rsaEncryption (1.2.840.113549.1.1.1), NULL parameters.
    let algorithm = der(0x30, &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut content = algorithm;
    content.extend(der(0x03, &bits));
    der(0x30, &content)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `account` as the JWT names it: upper-cased, cut at the first `.`.
pub fn jwt_account(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

impl KeyPair {
    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). The error says what the text is
    /// instead and how to get the right form; it never holds the key.
    pub fn from_pem(pem: &str) -> Result<KeyPair, String> {
        if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            return Err("it is an encrypted PKCS#8 key, which Sluice does not read yet: write an unencrypted copy \
                        readable only by Sluice's user with `openssl pkcs8 -in KEY.p8 -out rsa_key.p8 -nocrypt`"
                .into());
        }
        if pem.contains("BEGIN RSA PRIVATE KEY") {
            return Err("it is a PKCS#1 key (BEGIN RSA PRIVATE KEY): convert it to PKCS#8 with \
                        `openssl pkcs8 -topk8 -nocrypt -in KEY.pem -out rsa_key.p8`"
                .into());
        }
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .map(str::trim)
            .collect();
        if body.is_empty() {
            return Err("no `-----BEGIN PRIVATE KEY-----` block (a PKCS#8 PEM) in it".into());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("the PEM block is not base64 ({e})"))?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("not an RSA key Sluice can sign with: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki(key.public_key().as_ref()));
        let fingerprint = format!("SHA256:{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()));
        Ok(KeyPair { key, fingerprint })
    }

    /// `SHA256:<base64>`, as `DESC USER` shows `RSA_PUBLIC_KEY_FP`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `header.payload` signed: the compact JWT.
    pub fn sign(&self, header: &[u8], payload: &[u8]) -> Result<String, String> {
        let input = format!("{}.{}", b64url(header), b64url(payload));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .map_err(|_| "signing the login token failed".to_string())?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    /// The login token for `user` of `account`, issued at `now` (seconds since 1970).
    pub fn token(&self, account: &str, user: &str, now: i64) -> Result<String, String> {
        let subject = format!("{}.{}", jwt_account(account), user.to_uppercase());
        let payload = serde_json::json!({
            "iss": format!("{subject}.{}", self.fingerprint),
            "sub": subject,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        self.sign(br#"{"alg":"RS256","typ":"JWT"}"#, payload.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 A.2's RSA key as PKCS#8 (test data); the vector below was computed with Python's
    /// `cryptography` and OpenSSL's CLI from that key (docs/progress/issue-12-research.md).
    const KEY: &str = include_str!("../tests/data/rfc7515_a2.p8");

    #[test]
    fn fingerprint_and_signature_match_the_known_answer() {
        let k = KeyPair::from_pem(KEY).unwrap();
        assert_eq!(k.fingerprint(), "SHA256:b9E8JDWjYefFiM0X9V9a098Bd6ZsFyemogCEX016uIw=");
        let payload = r#"{"iss":"XY12345.SVC_SLUICE.SHA256:b9E8JDWjYefFiM0X9V9a098Bd6ZsFyemogCEX016uIw=","sub":"XY12345.SVC_SLUICE","iat":1700000000,"exp":1700003600}"#;
        let jwt = k.sign(br#"{"alg":"RS256","typ":"JWT"}"#, payload.as_bytes()).unwrap();
        assert_eq!(
            jwt,
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJYWTEyMzQ1LlNWQ19TTFVJQ0UuU0hBMjU2OmI5RThKRFdqWWVmRmlNMFg5VjlhMDk4QmQ2WnNGeWVtb2dDRVgwMTZ1SXc9Iiwic3ViIjoiWFkxMjM0NS5TVkNfU0xVSUNFIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDB9.dSlbbYei8IMq-u3edffMddcEZTuNJFAIFgNx27MJZl66BU51bfWeGc5ojknCwsNcGQjS0MwHGovVU9gqygvmdVGs4bVqJOK-ieGdS2aAfOpT0kCpfoYnbhIcVvWAhtEDwYFW3kBzjrQ-Af4-Y_2-6bmB3afQN5HhF8Ev7iKkUa647hxx2fOklVuFsTtvFT3SitjhbTn6AfBLG0JX41XVR7lx6mQy7fBmqQb3srljLJURcJ724xGSJJAM-wRFSXMU0n4AwdmnIB81Ku_dBxnCWX6G2Nj24ejYVO2YBZbXcm_wVjMMSgl3U2FjfK8_Nfi_yP6pVT37mvo1UR5Zk1kmJQ"
        );
    }

    #[test]
    fn tokens_name_the_account_and_user_as_snowflake_does() {
        let k = KeyPair::from_pem(KEY).unwrap();
        let jwt = k.token("xy12345.eu-west-1", "svc_sluice", 1_700_000_000).unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload["sub"], "XY12345.SVC_SLUICE");
        assert_eq!(payload["iss"], "XY12345.SVC_SLUICE.SHA256:b9E8JDWjYefFiM0X9V9a098Bd6ZsFyemogCEX016uIw=");
        assert_eq!(payload["exp"].as_i64(), Some(1_700_000_000 + LIFETIME_SECS));
        assert_eq!(jwt_account("myorg-prod"), "MYORG-PROD");
    }

    #[test]
    fn other_key_forms_are_refused_with_the_fix() {
        let e = KeyPair::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMII=\n-----END ENCRYPTED PRIVATE KEY-----")
            .unwrap_err();
        assert!(e.contains("-nocrypt"), "{e}");
        let e = KeyPair::from_pem("-----BEGIN RSA PRIVATE KEY-----\nMII=\n-----END RSA PRIVATE KEY-----").unwrap_err();
        assert!(e.contains("-topk8"), "{e}");
        assert!(KeyPair::from_pem("hello").unwrap_err().contains("BEGIN PRIVATE KEY"));
        assert_eq!(
            format!("{:?}", KeyPair::from_pem(KEY).unwrap()),
            "KeyPair(SHA256:b9E8JDWjYefFiM0X9V9a098Bd6ZsFyemogCEX016uIw=)"
        );
    }
}
