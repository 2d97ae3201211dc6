//! Just enough XML reading for a `ListMultipartUploadsResult`.

use crate::PendingUpload;

/// One page of a multipart-upload listing.
pub(crate) struct UploadsPage {
    pub(crate) uploads: Vec<PendingUpload>,
    /// Where the next page starts (`NextKeyMarker`, `NextUploadIdMarker`),
    /// when the listing is truncated.
    pub(crate) next: Option<(String, Option<String>)>,
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    xml.get(start..start + len).map(unescape)
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

pub(crate) fn uploads_page(xml: &str) -> UploadsPage {
    let mut uploads = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Upload>") {
        let after = &rest[start + "<Upload>".len()..];
        let Some(len) = after.find("</Upload>") else {
            break;
        };
        let upload = &after[..len];
        if let (Some(key), Some(upload_id)) = (element(upload, "Key"), element(upload, "UploadId"))
        {
            uploads.push(PendingUpload { key, upload_id });
        }
        rest = &after[len..];
    }
    let truncated = element(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = match (truncated, element(xml, "NextKeyMarker")) {
        (true, Some(key)) if !key.is_empty() => Some((
            key,
            element(xml, "NextUploadIdMarker").filter(|id| !id.is_empty()),
        )),
        _ => None,
    };
    UploadsPage { uploads, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uploads_and_the_next_marker() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>\
            <NextKeyMarker>a&amp;b</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>\
            <Upload><Key>a&amp;b</Key><UploadId>u1</UploadId><Initiated>x</Initiated></Upload>\
            <Upload><Key>c</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>";
        let page = uploads_page(xml);
        assert_eq!(
            page.uploads,
            vec![
                PendingUpload {
                    key: "a&b".into(),
                    upload_id: "u1".into()
                },
                PendingUpload {
                    key: "c".into(),
                    upload_id: "u2".into()
                }
            ]
        );
        assert_eq!(page.next, Some(("a&b".into(), Some("u2".into()))));
        let empty = uploads_page("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>");
        assert!(empty.uploads.is_empty() && empty.next.is_none());
    }
}
