"""The repository's SQL, one module per area; `bot.storage.repository.Repository` combines them.

Every statement here that reads, changes or deletes sessions or turns is scoped by `guild_id`, except the
ones listed in `bot.storage.repository.CROSS_GUILD_QUERIES` (tests scan these modules to hold them to it).
"""
