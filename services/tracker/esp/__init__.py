"""ESP event webhooks at the tracker (issue 17): Amazon SES through SNS, Postmark, SendGrid and Mailgun.

`common` (what every request comes down to), one pure module per provider (`ses`, `sendgrid`, `mailgun`,
`postmark`: its authentication and its events), `sns` (what is fetched from SNS) and `intake` (the use
case). What an event causes is `services.tracker.returns.reported`, as for returning mail.
"""
