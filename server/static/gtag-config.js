/* The site's Google tag configuration, as Google's snippet writes it, but in a first-party file so
   that no inline script is needed under the Content-Security-Policy. The Consent Mode default was
   already pushed by the consent middleware's snippet at the top of <head>. */
window.dataLayer = window.dataLayer || [];
window.gtag = window.gtag || function () { window.dataLayer.push(arguments); };
window.gtag("js", new Date());
window.gtag("config", "G-DEMO000000");
