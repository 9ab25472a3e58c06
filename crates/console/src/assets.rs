//! The pages, stylesheet and script, embedded in the binary: the console
//! works offline and needs nothing but this crate.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::StatusCode;

use std::sync::Arc;

use super::{with, Console};
use ember_web::{Body, Request, Response, Router};

const LAYOUT: &str = include_str!("../assets/layout.html");
const HOME: &str = include_str!("../assets/home.html");
const MATH: &str = include_str!("../assets/math.html");
const LOAD: &str = include_str!("../assets/load.html");
const TOP: &str = include_str!("../assets/top.html");
const CLUSTER: &str = include_str!("../assets/cluster.html");
const JOBS: &str = include_str!("../assets/jobs.html");
const SERVICES: &str = include_str!("../assets/services.html");
const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

/// A page: its path, title and body.
struct Page {
    path: &'static str,
    id: &'static str,
    title: &'static str,
    body: &'static str,
}

const PAGES: [Page; 7] = [
    Page {
        path: "/",
        id: "home",
        title: "Home",
        body: HOME,
    },
    Page {
        path: "/math",
        id: "math",
        title: "Math",
        body: MATH,
    },
    Page {
        path: "/load",
        id: "load",
        title: "Load",
        body: LOAD,
    },
    Page {
        path: "/top",
        id: "top",
        title: "Top",
        body: TOP,
    },
    Page {
        path: "/cluster",
        id: "cluster",
        title: "Cluster",
        body: CLUSTER,
    },
    Page {
        path: "/jobs",
        id: "jobs",
        title: "Jobs",
        body: JOBS,
    },
    Page {
        path: "/services",
        id: "services",
        title: "Services",
        body: SERVICES,
    },
];

pub(crate) fn mount(router: Router, console: &Arc<Console>) -> Router {
    let router = PAGES.iter().fold(router, |router, page| {
        let html = render(page);
        router.get(
            page.path,
            with(console, move |_console, _request: Request| {
                let html = html.clone();
                async move { ember_web::html(html) }
            }),
        )
    });
    router.get(
        "/assets/console/*",
        with(console, |_console, request: Request| async move {
            asset(request.uri().path())
        }),
    )
}

/// The layout around a page's body, with its navigation link marked.
fn render(page: &Page) -> String {
    let nav: String = PAGES
        .iter()
        .map(|p| {
            let current = if p.id == page.id {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{}\"{current}>{}</a>", p.path, p.title)
        })
        .collect();
    LAYOUT
        .replace("{{title}}", page.title)
        .replace("{{page}}", page.id)
        .replace("{{nav}}", &nav)
        .replace("{{body}}", page.body)
}

fn asset(path: &str) -> Response {
    let (content_type, body) = match path.strip_prefix("/assets/console/") {
        Some("console.css") => ("text/css; charset=utf-8", CSS),
        Some("console.js") => ("text/javascript; charset=utf-8", JS),
        _ => return ember_web::text(StatusCode::NOT_FOUND, "no such asset"),
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type.parse().expect("a valid header"));
    headers.insert(CACHE_CONTROL, "no-cache".parse().expect("a valid header"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_links_every_other_and_loads_the_assets() {
        for page in &PAGES {
            let html = render(page);
            assert!(!html.contains("{{"), "{} left a placeholder", page.id);
            for other in &PAGES {
                assert!(html.contains(&format!("href=\"{}\"", other.path)));
            }
            assert!(html.contains("/assets/console/console.js"));
            assert!(html.contains("/assets/console/console.css"));
        }
    }
}
