//! The S3 XML bodies this crate reads itself, deserialized with `quick-xml`
//! and serde: a `ListMultipartUploadsResult` and an `<Error>` body.
//!
//! Why not `rust-s3`'s own types: its `MultipartUpload` demands a
//! `StorageClass` (and an `Initiated`) on every upload, which SeaweedFS leaves
//! out, so [`Storage::pending_uploads`](crate::Storage::pending_uploads) sends
//! the listing as a raw request and reads the body here. Its `AwsError`
//! demands `Code`, `Message` and `RequestId` together, while a failed request
//! must still be recognised by a `<Code>` alone (and `rust-s3` hands error
//! bodies over unparsed, as the text of `S3Error::HttpFailWithBody`).
//!
//! Both bodies are read leniently, as S3 servers differ: unknown elements and
//! the `xmlns` attribute are ignored, and every element is optional.

use serde::Deserialize;

use crate::PendingUpload;

/// One page of a multipart-upload listing.
#[derive(Debug)]
pub(crate) struct UploadsPage {
    pub(crate) uploads: Vec<PendingUpload>,
    /// Where the next page starts (`NextKeyMarker`, `NextUploadIdMarker`),
    /// when the listing is truncated.
    pub(crate) next: Option<(String, Option<String>)>,
}

/// `<ListMultipartUploadsResult>`, the fields that are used.
#[derive(Deserialize)]
struct ListMultipartUploadsResult {
    #[serde(rename = "IsTruncated")]
    is_truncated: Option<String>,
    #[serde(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[serde(rename = "NextUploadIdMarker")]
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    uploads: Vec<Upload>,
}

/// One `<Upload>`; `Initiated`, `StorageClass`, `Owner` and the rest are
/// not read.
#[derive(Deserialize)]
struct Upload {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "UploadId")]
    upload_id: Option<String>,
}

/// Reads a `ListMultipartUploadsResult`. An `<Upload>` without a `Key` or an
/// `UploadId` is skipped; a body that is not such XML is an error whose text
/// is `quick-xml`'s.
pub(crate) fn uploads_page(xml: &str) -> Result<UploadsPage, quick_xml::DeError> {
    if xml.trim().is_empty() {
        // quick-xml would say "unexpected `Event::Eof`".
        return Err(quick_xml::DeError::Custom("the body is empty".into()));
    }
    let result: ListMultipartUploadsResult = quick_xml::de::from_str(xml)?;
    let uploads = result
        .uploads
        .into_iter()
        .filter_map(|upload| match (upload.key, upload.upload_id) {
            (Some(key), Some(upload_id)) => Some(PendingUpload { key, upload_id }),
            _ => None,
        })
        .collect();
    let truncated = result
        .is_truncated
        .is_some_and(|truncated| truncated.trim() == "true");
    let non_empty = |text: Option<String>| text.filter(|text| !text.is_empty());
    let next = match non_empty(result.next_key_marker) {
        Some(key) if truncated => Some((key, non_empty(result.next_upload_id_marker))),
        _ => None,
    };
    Ok(UploadsPage { uploads, next })
}

/// What an S3 `<Error>` body says.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "Code")]
    pub(crate) code: Option<String>,
    #[serde(rename = "Message")]
    pub(crate) message: Option<String>,
}

impl ErrorBody {
    /// Reads an error body. A body that is empty or not XML (a proxy's HTML
    /// page, say) says nothing: both fields are `None`.
    pub(crate) fn parse(body: &str) -> Self {
        quick_xml::de::from_str(body).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upload(key: &str, upload_id: &str) -> PendingUpload {
        PendingUpload {
            key: key.into(),
            upload_id: upload_id.into(),
        }
    }

    #[test]
    fn reads_uploads_and_the_next_marker() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>\
            <NextKeyMarker>a&amp;b</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>\
            <Upload><Key>a&amp;b</Key><UploadId>u1</UploadId><Initiated>x</Initiated></Upload>\
            <Upload><Key>c</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>";
        let page = uploads_page(xml).unwrap();
        assert_eq!(page.uploads, vec![upload("a&b", "u1"), upload("c", "u2")]);
        assert_eq!(page.next, Some(("a&b".into(), Some("u2".into()))));
        let empty = uploads_page(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty() && empty.next.is_none());
    }

    /// As SeaweedFS sends it: no `StorageClass`, no `Owner`, no markers, and
    /// empty elements for the ones it has no value for.
    #[test]
    fn reads_a_seaweedfs_listing_without_storage_class() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>imports</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><NextKeyMarker></NextKeyMarker><NextUploadIdMarker></NextUploadIdMarker><Prefix>exports/</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated><Upload><Key>exports/a b&lt;1&gt;.csv</Key><UploadId>0f3c1d3a2e5b4c7d</UploadId><Initiated>2026-12-02T07:30:00Z</Initiated></Upload><Upload><Key>exports/c.csv</Key><UploadId>9a8b7c6d</UploadId><Initiated>2026-12-02T07:31:00Z</Initiated></Upload></ListMultipartUploadsResult>"#;
        let page = uploads_page(xml).unwrap();
        assert_eq!(
            page.uploads,
            vec![
                upload("exports/a b<1>.csv", "0f3c1d3a2e5b4c7d"),
                upload("exports/c.csv", "9a8b7c6d")
            ]
        );
        assert_eq!(page.next, None);
    }

    /// As AWS documents it: `StorageClass`, `Initiator` and `Owner` with
    /// their own children, a `CommonPrefixes` after the uploads, and a
    /// truncated listing whose next page starts at the markers.
    #[test]
    fn reads_an_aws_listing_with_every_element() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <Delimiter>/</Delimiter>
  <Prefix></Prefix>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator>
      <ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID>
      <DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName>
    </Initiator>
    <Owner>
      <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
      <DisplayName>OwnerDisplayName</DisplayName>
    </Owner>
    <StorageClass>REDUCED_REDUNDANCY</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>my-movie.m2ts</Key>
    <UploadId>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</UploadId>
    <Initiator>
      <ID>b1d16700c70b0b05597d7acd6a3f92be</ID>
      <DisplayName>InitiatorDisplayName</DisplayName>
    </Initiator>
    <Owner>
      <ID>b1d16700c70b0b05597d7acd6a3f92be</ID>
      <DisplayName>OwnerDisplayName</DisplayName>
    </Owner>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <CommonPrefixes>
    <Prefix>photos/</Prefix>
  </CommonPrefixes>
</ListMultipartUploadsResult>"#;
        let page = uploads_page(xml).unwrap();
        assert_eq!(
            page.uploads,
            vec![
                upload(
                    "my-divisor",
                    "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw"
                ),
                upload(
                    "my-movie.m2ts",
                    "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ"
                ),
            ]
        );
        assert_eq!(
            page.next,
            Some((
                "my-movie.m2ts".into(),
                Some("YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into())
            ))
        );
    }

    #[test]
    fn an_upload_without_a_key_or_an_id_is_skipped_and_a_truncated_listing_without_a_marker_ends() {
        let xml = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>\
            <Upload><UploadId>u1</UploadId></Upload><Upload><Key>k</Key></Upload>\
            <Upload><Key>k2</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>";
        let page = uploads_page(xml).unwrap();
        assert_eq!(page.uploads, vec![upload("k2", "u2")]);
        assert_eq!(page.next, None);
        // A key marker without an upload-id marker still continues.
        let xml = "<ListMultipartUploadsResult><IsTruncated> true </IsTruncated>\
            <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker/></ListMultipartUploadsResult>";
        assert_eq!(uploads_page(xml).unwrap().next, Some(("k2".into(), None)));
    }

    #[test]
    fn a_listing_that_is_not_xml_is_an_error_not_a_panic_or_an_empty_page() {
        for (garbage, says) in [
            ("", "the body is empty"),
            (" \n", "the body is empty"),
            ("not xml at all", "invalid type: string \"not xml at all\""),
            (
                "<ListMultipartUploadsResult><Upload><Key>k</Key>",
                "`</Upload>` not found before end of input",
            ),
            (
                "<ListMultipartUploadsResult><Upload><Key>k</Wrong></Upload></ListMultipartUploadsResult>",
                "expected `</Key>`, but `</Wrong>` was found",
            ),
            (
                "<html><body>502 Bad Gateway</body>",
                "`</html>` not found before end of input",
            ),
        ] {
            let err = uploads_page(garbage).unwrap_err().to_string();
            assert!(err.contains(says), "{garbage:?} gave {err:?}");
        }
    }

    #[test]
    fn reads_error_bodies_as_aws_and_seaweedfs_send_them() {
        let aws = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchKey</Code>
  <Message>The resource you requested does not exist</Message>
  <Resource>/mybucket/myfoto.jpg</Resource>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>"#;
        assert_eq!(
            ErrorBody::parse(aws),
            ErrorBody {
                code: Some("NoSuchKey".into()),
                message: Some("The resource you requested does not exist".into()),
            }
        );
        let seaweedfs = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><Resource>/nope</Resource><RequestId>1764660000000000000</RequestId><Key></Key><BucketName>nope</BucketName></Error>"#;
        assert_eq!(
            ErrorBody::parse(seaweedfs),
            ErrorBody {
                code: Some("NoSuchBucket".into()),
                message: Some("The specified bucket does not exist".into()),
            }
        );
        // Escapes are read as text.
        assert_eq!(
            ErrorBody::parse(
                "<Error><Code>AccessDenied</Code><Message>no &amp; never</Message></Error>"
            )
            .message
            .as_deref(),
            Some("no & never")
        );
        assert_eq!(
            ErrorBody::parse("<Error><Code>BucketAlreadyOwnedByYou</Code></Error>"),
            ErrorBody {
                code: Some("BucketAlreadyOwnedByYou".into()),
                message: None,
            }
        );
    }

    #[test]
    fn an_error_body_that_is_not_xml_says_nothing() {
        for garbage in [
            "",
            "Internal Server Error",
            "<Code>unterminated",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ] {
            assert_eq!(
                ErrorBody::parse(garbage),
                ErrorBody::default(),
                "{garbage:?}"
            );
        }
    }
}
